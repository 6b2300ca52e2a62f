// Use imsim's web pages in headless Chromium as a person does, and report what they read and see.
//   node serve.js CONFIG.json   (CONFIG: {url, image, duplicates: "threshold=0.99", shots: DIR})
// Prints one JSON object: the search's first results (ids, paths, what the page says), the "more like this"
// results, the duplicates page's pairs before and after marking the first "not a duplicate", and after a reload.
const { chromium } = require('playwright-core');
const fs = require('fs');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const hits = (page) => page.evaluate(() => [...document.querySelectorAll('[data-testid=hit]')].map((card) => ({
  id: card.dataset.id, text: card.innerText, thumb: card.querySelector('img').naturalWidth })));
const loads = (page, n) => page.waitForFunction((n) => Number(document.body.dataset.loads || 0) >= n, n, { timeout: 60000 });
const searches = (page, n) => page.waitForFunction((n) => Number(document.body.dataset.searches || 0) >= n, n, { timeout: 60000 });
const pairs = (page) => page.evaluate(() => [...document.querySelectorAll('[data-testid=pair]')].map((row) => [row.dataset.a, row.dataset.b]));

(async () => {
  const browser = await chromium.launch({
    executablePath: config.chromium || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const out = {};
  await page.goto(config.url);
  await page.setInputFiles('[data-testid=file]', config.image);
  await page.waitForSelector('[data-testid=hit] img[src^="blob:"]', { timeout: 60000 });
  await page.waitForTimeout(1000);  // the other thumbnails
  out.status = await page.innerText('[data-testid=status]');
  out.search = await hits(page);
  await page.screenshot({ path: `${config.shots}/imsim-search.png`, fullPage: false });
  await page.locator('[data-testid=more]').nth(2).click();
  await searches(page, 2);
  await page.waitForTimeout(1000);
  out.more = await hits(page);
  out.moreStatus = await page.innerText('[data-testid=status]');
  await page.goto(`${config.url}duplicates?${config.duplicates}`);
  await loads(page, 1);
  await page.waitForTimeout(1000);
  out.dupStatus = await page.innerText('[data-testid=status]');
  out.pairsBefore = await pairs(page);
  out.exactGroups = await page.locator('[data-testid=exact] [data-testid=group]').count();
  await page.screenshot({ path: `${config.shots}/imsim-duplicates.png`, fullPage: true });
  if (out.pairsBefore.length) {
    out.marked = out.pairsBefore[0];
    await page.locator('[data-testid=not-duplicate]').first().click();
    await loads(page, 2);
    out.pairsAfter = await pairs(page);
    await page.reload();
    await loads(page, 1);
    out.pairsReloaded = await pairs(page);
    out.dupStatusReloaded = await page.innerText('[data-testid=status]');
  }
  await browser.close();
  process.stdout.write(JSON.stringify(out));
})().catch((err) => { console.error(err); process.exit(1); });
