// Writes dist/index.cjs, the CommonJS entry ("require" in package.json "exports") of an ES-module
// package: it loads dist/index.js through Node's require(esm) (Node >= 20.19 / 22.12), and on a Node
// that cannot, throws one line saying what to do instead of ERR_PACKAGE_PATH_NOT_EXPORTED.
// Each package's tsup config runs it as its onSuccess hook (in the package directory).
import * as fs from 'node:fs';
import { pathToFileURL } from 'node:url';

/** tsup `onSuccess` hook of every published package (tsup runs it in the package directory). */
export async function writeRequireShim() {
  const { name } = JSON.parse(fs.readFileSync('package.json', 'utf8'));
  const shim = `'use strict';
// CommonJS entry of ${name}, an ES module package (written by tools/write-require-shim.mjs).
try {
  module.exports = require('./index.js');
} catch (e) {
  if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) {
    const err = new Error(
      '${name} is an ES module package, and this Node (' + process.version + ') cannot require() it: ' +
        "use import, or await import('${name}') from CommonJS (Node >= 20.19 or >= 22.12 also loads it with require())",
    );
    err.code = 'ERR_PATCHFLOW_ESM_ONLY';
    throw err;
  }
  throw e;
}
`;
  fs.mkdirSync('dist', { recursive: true });
  fs.writeFileSync('dist/index.cjs', shim);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await writeRequireShim();
