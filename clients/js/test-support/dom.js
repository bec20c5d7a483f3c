// React in Node: jsdom's window as the globals, set before react-dom is imported (it
// decides at import time whether it has a DOM), and a bounded wait on the rendered page.

import { JSDOM } from 'jsdom'

import { sleep } from './wait.js'

const dom = new JSDOM('<!doctype html><html><body></body></html>')
globalThis.window = dom.window
globalThis.document = dom.window.document
if (globalThis.navigator === undefined) globalThis.navigator = dom.window.navigator // Node 20 has none

export const { createElement: h, StrictMode } = await import('react')
export const { createRoot } = await import('react-dom/client')

/** Resolve once `check()` is true; reject after `timeoutMs`, showing the page. */
export async function until(check, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (check()) return
    await sleep(20)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${document.body.innerHTML}`)
}
