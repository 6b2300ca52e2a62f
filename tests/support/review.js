// Review duplicates in headless Chromium with the keyboard only, as a person does, and report what the page showed.
//   node review.js CONFIG.json   (CONFIG: {url, shots, chromium, actions})
// Prints one JSON object: the first open (status, threshold source, groups, the first group's members side by side
// with their facts and whether their images drew), each keyboard action (the group it took, resolve or not-a-duplicate),
// the open groups after a reload, the decided groups, an undo, the CSV export the page downloads, and /docs.
const { chromium } = require('playwright-core');
const fs = require('fs');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const counter = (page, key, n) => page.waitForFunction(([key, n]) => Number(document.body.dataset[key] || 0) >= n, [key, n], { timeout: 120000 });
const groups = (page) => page.evaluate(() => [...document.querySelectorAll('#groups [data-testid=group]')].map((g) => g.dataset.members));

(async () => {
  const browser = await chromium.launch({
    executablePath: config.chromium || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, acceptDownloads: true });
  const page = await context.newPage();
  const out = { actions: [] };
  await page.goto(`${config.url}duplicates`);
  await counter(page, 'loads', 1);
  await page.waitForFunction(() => [...document.querySelectorAll('#groups [data-testid=group]:first-child img')].every((i) => i.naturalWidth > 0), null, { timeout: 60000 }).catch(() => {});
  out.status = await page.innerText('[data-testid=status]');
  out.statusIsError = await page.$eval('[data-testid=status]', (el) => el.className === 'error');
  out.source = await page.innerText('[data-testid=source]');
  out.open = await groups(page);
  out.first = await page.evaluate(() => {
    const group = document.querySelector('#groups [data-testid=group]');
    if (!group) return null;
    return [...group.querySelectorAll('[data-testid=member]')].map((m) => {
      const box = m.getBoundingClientRect();
      return { id: m.dataset.id, facts: m.querySelector('[data-testid=facts]').innerText, drawn: m.querySelector('img').naturalWidth,
               top: Math.round(box.top), left: Math.round(box.left), width: Math.round(box.width) };
    });
  });
  await page.screenshot({ path: `${config.shots}/imsim-review.png`, fullPage: false });
  for (let n = 0; n < config.actions; n++) {  // the keyboard only: Enter keeps the suggested member, n marks the closest pair
    const before = await groups(page);
    if (!before.length) break;
    const size = before[0].split(',').length;
    const key = size === 2 && n % 3 === 2 ? 'n' : 'Enter';
    await page.keyboard.press(key);
    await counter(page, 'actions', n + 1);
    out.actions.push({ key, members: before[0], flash: await page.innerText('[data-testid=flash]') });
  }
  await page.reload();
  await counter(page, 'loads', 1);
  out.openAfterReload = await groups(page);
  await page.selectOption('[data-testid=show]', 'decided');
  await counter(page, 'loads', 2);
  out.decided = await groups(page);
  if (out.decided.length) {
    out.undone = out.decided[0];
    await page.locator('[data-testid=undo]').first().click();
    await counter(page, 'loads', 3);
    out.decidedAfterUndo = await groups(page);
  }
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=export-csv]')]);
  out.exported = fs.readFileSync(await download.path(), 'utf8');
  await page.goto(`${config.url}docs`);  // the API's documentation, with no network: served from a package
  await page.waitForSelector('.swagger-ui .info .title', { timeout: 60000 });
  out.docsTitle = await page.innerText('.swagger-ui .info .title');
  out.docsOperations = await page.locator('.opblock').count();
  await browser.close();
  process.stdout.write(JSON.stringify(out));
})().catch((err) => { console.error(err); process.exit(1); });
