// Use imsim's search page in headless Chromium as a person does, and report what it reads and shows.
//   node serve.js CONFIG.json   (CONFIG: {url, image, shots: DIR}; the duplicate review is review.js)
// Prints one JSON object: the search's first results (ids, paths, what the page says) and the "more like this" results.
const { chromium } = require('playwright-core');
const fs = require('fs');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const hits = (page) => page.evaluate(() => [...document.querySelectorAll('[data-testid=hit]')].map((card) => ({
  id: card.dataset.id, text: card.innerText, thumb: card.querySelector('img').naturalWidth })));
const searches = (page, n) => page.waitForFunction((n) => Number(document.body.dataset.searches || 0) >= n, n, { timeout: 60000 });

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
  await page.click('[data-testid=load-more]');  // the next page, appended, its ranks going on
  await searches(page, 2);
  out.afterMore = await hits(page);
  await page.locator('[data-testid=more]').nth(2).click();
  await searches(page, 3);
  await page.waitForTimeout(1000);
  out.more = await hits(page);
  out.moreStatus = await page.innerText('[data-testid=status]');
  await browser.close();
  process.stdout.write(JSON.stringify(out));
})().catch((err) => { console.error(err); process.exit(1); });
