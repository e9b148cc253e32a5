// Builds Registrar.sol with the pinned solc-js for the Jami chain's EVM (petersburg) and writes
// Registrar.abi.json and Registrar.bin next to it. `node build.mjs --check` only compares the
// fresh build with the committed files and exits 1 if they differ.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', '..', 'package.json'));
let solc;
try {
  solc = require('solc');
} catch {
  console.error('solc-js is not installed: run `npm ci` in the repository root');
  process.exit(2);
}

const source = readFileSync(join(here, 'Registrar.sol'), 'utf8');
const input = {
  language: 'Solidity',
  sources: { 'Registrar.sol': { content: source } },
  settings: {
    evmVersion: 'petersburg',
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.methodIdentifiers'] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
if (errors.length > 0) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
const c = output.contracts['Registrar.sol'].WaypostRegistrar;
const abi = JSON.stringify(c.abi, null, 2) + '\n';
const bin = c.evm.bytecode.object + '\n';
const ids = JSON.stringify(c.evm.methodIdentifiers, null, 2) + '\n';
const files = { 'Registrar.abi.json': abi, 'Registrar.bin': bin, 'Registrar.selectors.json': ids };

if (process.argv.includes('--check')) {
  let same = true;
  for (const [name, fresh] of Object.entries(files)) {
    let committed = '';
    try {
      committed = readFileSync(join(here, name), 'utf8');
    } catch {}
    if (committed !== fresh) {
      console.error(`${name} differs from a fresh build of Registrar.sol (solc ${solc.version()}): run \`node nameserver/contract/build.mjs\``);
      same = false;
    }
  }
  process.exit(same ? 0 : 1);
}
for (const [name, text] of Object.entries(files)) writeFileSync(join(here, name), text);
console.log(`built with solc ${solc.version()}: ${(bin.length - 1) / 2} bytes of creation code`);
