// The daemon's error answers are RFC 9457 problem+json: `detail` for people, `field` (the
// alerts API) naming the offending value, and `Retry-After` on a 429/503.

/** `{detail, field, retryAfter}` of an error answer; empty strings where it has none. */
export async function readProblem(res) {
  let doc = null
  try {
    doc = await res.json()
  } catch {
    // not a problem document (a proxy's HTML page, say)
  }
  const text = (value) => (typeof value === 'string' ? value : '')
  return {
    detail: text(doc?.detail) || `HTTP ${res.status}`,
    field: text(doc?.field),
    retryAfter: res.headers.get('Retry-After') ?? '',
  }
}

/** A refusal in one line: its detail, and how long to wait if the daemon said. */
export async function problemText(res) {
  const { detail, retryAfter } = await readProblem(res)
  return `${detail}${retryAfter ? ` (retry in ${retryAfter} s)` : ''}`
}
