// Drive Milvus's Attu dashboard in headless Chromium the way a user does, and report what they read and see.
//   node attu.js CONFIG.json   (CONFIG: {attu: URL, milvus: HOST:PORT, collections: [names], search: {collection, id}, shots: DIR})
// Prints one JSON object: per page, document.body.innerText (what a user reads), the collection list's name
// cells with whether the browser cut them (an ellipsis), the schema tables' rows, the search results' rows;
// screenshots (what a user sees) go to CONFIG.shots.
const { chromium } = require('playwright-core');
const fs = require('fs');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const settle = async (page) => { await page.waitForLoadState('networkidle'); await page.waitForTimeout(3000); };
const text = (page) => page.evaluate(() => document.body.innerText);
const tableRows = (page) => page.evaluate(() => [...document.querySelectorAll('table tr')].map(
  (tr) => [...tr.querySelectorAll('td, th')].map((c) => c.innerText.trim())));

(async () => {
  const browser = await chromium.launch({
    executablePath: config.chromium || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const out = { schema: {} };
  await page.goto(`${config.attu}/#/connect`); await settle(page);
  // type the server's address as a user does: Attu's prefilled default lives in its shared install folder
  await page.fill('input[placeholder="Milvus Address"]', config.milvus);
  await page.click('button[type=submit]'); await settle(page);
  await page.goto(`${config.attu}/#/databases/default/collections`); await settle(page);
  out.list = await text(page);
  out.listRows = await tableRows(page);
  out.names = await page.evaluate((names) => names.map((name) => {
    const cell = [...document.querySelectorAll('table td *')].find((el) => el.children.length === 0 && el.textContent.trim() === name);
    return cell ? { name, shown: true, cut: cell.scrollWidth > cell.clientWidth + 1 } : { name, shown: false, cut: true };
  }), config.collections);
  await page.screenshot({ path: `${config.shots}/attu-collections.png` });
  for (const name of config.collections) {
    await page.goto(`${config.attu}/#/databases/default/${name}/schema`); await settle(page);
    out.schema[name] = { text: await text(page), rows: await tableRows(page) };
  }
  await page.screenshot({ path: `${config.shots}/attu-schema.png` });
  const { collection, id } = config.search;
  await page.goto(`${config.attu}/#/databases/default/${collection}/search`); await settle(page);
  await page.locator('[contenteditable=true]').first().click();
  await page.keyboard.type(id);
  await page.waitForTimeout(2500);  // Attu fetches the entity's vector
  await page.getByRole('button', { name: 'Search' }).click(); await settle(page);
  out.searchRows = await tableRows(page);
  await page.screenshot({ path: `${config.shots}/attu-search.png` });
  await browser.close();
  process.stdout.write(JSON.stringify(out));
})().catch((err) => { console.error(err); process.exit(1); });
