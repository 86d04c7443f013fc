// node report_check.cjs CHROMIUM PAGE_URL OUT_JSON: open an HTML report in headless Chromium
// (playwright-core) and write {images, videos, console} to OUT_JSON: every <img> with its
// natural size once loaded, every <video> with its readyState, duration and size once its
// metadata and first frame are in, and every console message, page error and failed request.
const fs = require('fs');
const { chromium } = require('playwright-core');

async function main() {
  const [exe, url, outFile] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: exe,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
           '--autoplay-policy=no-user-gesture-required'],
  });
  const log = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    page.on('console', (msg) => log.push({ type: msg.type(), text: msg.text() }));
    page.on('pageerror', (err) => log.push({ type: 'pageerror', text: String(err) }));
    page.on('requestfailed', (req) => log.push({ type: 'requestfailed', text: req.url().slice(0, 200) }));
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForFunction(() => Array.from(document.images).every((i) => i.complete), null, { timeout: 60000 });
    await page.waitForFunction(() => Array.from(document.querySelectorAll('video')).every(
      (v) => v.readyState >= 2 || v.error), null, { timeout: 60000 });
    const result = await page.evaluate(() => ({
      images: Array.from(document.images).map((i) => ({ width: i.naturalWidth, height: i.naturalHeight,
                                                         src: i.src.slice(0, 60) })),
      videos: Array.from(document.querySelectorAll('video')).map((v) => ({
        readyState: v.readyState, duration: v.duration, width: v.videoWidth, height: v.videoHeight,
        error: v.error ? v.error.code : null })),
      title: document.title,
    }));
    fs.writeFileSync(outFile, JSON.stringify({ ...result, console: log }));
  } finally {
    await browser.close();
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
