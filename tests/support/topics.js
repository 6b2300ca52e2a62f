// Open imsim's topics page in headless Chromium and report what it shows.
//   node topics.js CONFIG.json   (CONFIG: {url, shots, chromium})
const { chromium } = require('playwright-core');
const fs = require('fs');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
(async () => {
  const browser = await chromium.launch({ executablePath: config.chromium || '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(`${config.url}topics`);
  await page.waitForFunction(() => document.body.dataset.rendered, null, { timeout: 60000 });
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=thumb]')].every((i) => i.naturalWidth > 0), null, { timeout: 60000 });
  const out = {
    status: await page.innerText('[data-testid=status]'),
    renderedMs: Number(await page.evaluate(() => document.body.dataset.rendered)),
    thumbsMs: await page.evaluate(() => Math.round(performance.now())),  // from navigation to every thumbnail decoded
    topics: await page.evaluate(() => [...document.querySelectorAll('[data-testid=topic]')].map((t) => ({
      title: t.querySelector('h2').innerText, thumbs: t.querySelectorAll('img').length,
      drawn: [...t.querySelectorAll('img')].filter((i) => i.naturalWidth > 0).length,
      search: t.querySelector('a').getAttribute('href') }))),
    circles: await page.locator('[data-testid=map] circle').count(),
  };
  await page.screenshot({ path: `${config.shots}/imsim-topics.png` });
  await page.goto(`${config.url}${out.topics[0].search.slice(1)}`);  // "search in it": the search page in that topic
  await page.setInputFiles('[data-testid=file]', config.image);
  await page.waitForFunction(() => Number(document.body.dataset.searches || 0) >= 1, null, { timeout: 60000 });
  out.inTopic = await page.evaluate(() => [...document.querySelectorAll('[data-testid=hit]')].map((c) => c.dataset.id));
  await browser.close();
  process.stdout.write(JSON.stringify(out));
})().catch((err) => { console.error(err); process.exit(1); });
