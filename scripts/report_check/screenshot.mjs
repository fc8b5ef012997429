// Load an HTML report in headless Chromium (offline: @sparticuz/chromium ships the browser inside the npm
// package), screenshot the whole page, and fail unless every image decoded and nothing was fetched.
import chromium from "@sparticuz/chromium";
import puppeteer from "puppeteer-core";

const [file, out] = process.argv.slice(2);
const browser = await puppeteer.launch({args: chromium.args, executablePath: await chromium.executablePath(),
                                        headless: "shell"});
const page = await browser.newPage();
const external = [];
page.on("request", (r) => { if (!r.url().startsWith("file:") && !r.url().startsWith("data:")) external.push(r.url()); });
await page.setViewport({width: 1200, height: 900});
await page.goto(new URL(file, "file://" + process.cwd() + "/").href, {waitUntil: "load"});
await page.screenshot({path: out, fullPage: true});
const info = await page.evaluate(() => ({title: document.title, figures: document.images.length,
  broken: [...document.images].filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.alt),
  height: document.body.scrollHeight}));
await browser.close();
console.log(JSON.stringify({...info, external}));
if (info.broken.length || external.length || info.figures === 0) process.exit(1);
