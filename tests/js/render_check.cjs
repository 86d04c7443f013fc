// node render_check.cjs CHROMIUM PAGE_URL JOBS_JSON OUT_JSON: open PAGE_URL in headless Chromium
// (playwright-core), run window.renderJobs(jobs), write {results, console} to OUT_JSON. With JOBS_JSON
// '-', wait for the viewer page (window.viewerReady, 10 frames drawn), screenshot it and read window.viewerState.
const fs = require('fs');
const { chromium } = require('playwright-core');

async function main() {
  const [exe, url, jobsFile, outFile] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: exe,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
           '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
           '--disable-quic'],
  });
  const console_ = [];
  try {
    const page = await browser.newPage({ viewport: { width: 640, height: 480 } });
    page.on('console', (msg) => console_.push({ type: msg.type(), text: msg.text() }));
    page.on('pageerror', (err) => console_.push({ type: 'pageerror', text: String(err) }));
    page.on('requestfailed', (req) => console_.push({ type: 'requestfailed', text: req.url() }));
    await page.goto(url);
    let results = null;
    if (jobsFile !== '-') {
      await page.waitForFunction(() => window.pageReady === true, null, { timeout: 60000 });
      const jobs = JSON.parse(fs.readFileSync(jobsFile, 'utf8'));
      results = await page.evaluate((j) => window.renderJobs(j), jobs);
    } else {
      await page.waitForFunction(() => window.viewerReady === true, null, { timeout: 60000 });
      await page.waitForFunction(() => window.viewerState.frames >= 10, null, { timeout: 60000 });
      const png = await page.screenshot({ type: 'png' }).then((b) => 'data:image/png;base64,' + b.toString('base64'));
      results = [{ png, state: await page.evaluate(() => window.viewerState) }];
    }
    fs.writeFileSync(outFile, JSON.stringify({ results, console: console_ }));
  } finally {
    await browser.close();
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
