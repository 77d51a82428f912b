// Parses every ```mermaid block of the Markdown files given, with Mermaid's
// own parser (in a jsdom window, as Mermaid expects a browser); exits
// non-zero naming the file and the parser's message when one does not parse.
import { JSDOM } from 'jsdom';
import fs from 'fs';

const dom = new JSDOM('<!DOCTYPE html><body></body>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

let diagrams = 0;
for (const file of process.argv.slice(2)) {
  const markdown = fs.readFileSync(file, 'utf8');
  for (const [, diagram] of markdown.matchAll(/```mermaid\n([\s\S]*?)```/g)) {
    diagrams += 1;
    try {
      await mermaid.parse(diagram);
    } catch (error) {
      console.error(`${file}: a Mermaid diagram does not parse: ${error.message}`);
      process.exitCode = 1;
    }
  }
}
if (diagrams === 0) {
  console.error('no Mermaid diagram found');
  process.exitCode = 1;
}
