// Bundle the console with esbuild into OUT (argument): OUT/index.html and OUT/assets/*.
//
// Scripts and styles get content-hashed names, so the server may cache them for good; index.html
// (revalidated on every load) names the current ones. The licenses of the npm packages that end
// up in the bundle are collected into assets/third-party-licenses.txt. The new build is written
// beside OUT and swapped in at the end, so a running server never serves half a build.
import { build } from 'esbuild';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(process.argv[2] ?? path.join(here, 'dist'));
const staging = `${out}.staging-${process.pid}`;

await rm(staging, { recursive: true, force: true });
await mkdir(path.join(staging, 'assets'), { recursive: true });

let result;
try {
  result = await build({
    absWorkingDir: here,
    entryPoints: ['src/main.js', 'src/styles.css'],
    outdir: path.join(staging, 'assets'),
    entryNames: '[name]-[hash]',
    assetNames: '[name]-[hash]',
    loader: { '.svg': 'file' },
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['chrome109', 'firefox115', 'safari15.6'],
    legalComments: 'none', // collected into third-party-licenses.txt instead
    metafile: true,
    logLevel: 'warning',
  });
} catch {
  // esbuild has already printed what went wrong, with file and line
  await rm(staging, { recursive: true, force: true });
  process.exit(1);
}

// Which output is which entry point.
const outputs = {};
for (const [file, meta] of Object.entries(result.metafile.outputs)) {
  if (meta.entryPoint) outputs[meta.entryPoint] = path.basename(file);
}
const script = outputs['src/main.js'];
const styles = outputs['src/styles.css'];
if (!script || !styles) throw new Error(`esbuild produced no script or no stylesheet: ${JSON.stringify(outputs)}`);

// The licenses of the packages bundled (read from the metafile's inputs).
const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) packages.add(match[1]);
}
let licenses = 'Third-party software bundled into the inferd console\n';
for (const name of [...packages].sort()) {
  const dir = path.join(here, 'node_modules', name);
  const meta = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8'));
  const file = (await readdir(dir)).find((f) => /^licen[cs]e/i.test(f));
  const text = file ? await readFile(path.join(dir, file), 'utf8') : `License: ${meta.license}\n`;
  licenses += `\n${'='.repeat(72)}\n${name} ${meta.version} (${meta.license})\n${'='.repeat(72)}\n${text.trim()}\n`;
}
await writeFile(path.join(staging, 'assets', 'third-party-licenses.txt'), licenses);

await copyFile(path.join(here, 'favicon.svg'), path.join(staging, 'assets', 'favicon.svg'));
const template = await readFile(path.join(here, 'index.html'), 'utf8');
const page = template
  .replaceAll('{{SCRIPT}}', `/console/assets/${script}`)
  .replaceAll('{{STYLES}}', `/console/assets/${styles}`);
if (page.includes('{{')) throw new Error('index.html has a placeholder that the build does not fill');
await writeFile(path.join(staging, 'index.html'), page);

// Swap the new build in.
const previous = `${out}.previous-${process.pid}`;
if (existsSync(out)) await rename(out, previous);
await rename(staging, out);
await rm(previous, { recursive: true, force: true });
console.log(`console built: ${script}, ${styles} (${[...packages].sort().join(', ')})`);
