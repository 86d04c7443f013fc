// Validate glTF files with the Khronos glTF-Validator: node validate.cjs FILE... -> JSON report per file.
const fs = require('fs');
const path = require('path');
const validator = require('gltf-validator');

async function main() {
  const reports = [];
  for (const file of process.argv.slice(2)) {
    const bytes = new Uint8Array(fs.readFileSync(file));
    const report = await validator.validateBytes(bytes, {
      uri: path.basename(file),
      maxIssues: 1000,
      externalResourceFunction: () => Promise.reject(new Error('external resources are not allowed')),
    });
    reports.push({ file, validatorVersion: report.validatorVersion, issues: report.issues });
  }
  process.stdout.write(JSON.stringify(reports));
}

main().catch((err) => { console.error(err); process.exit(1); });
