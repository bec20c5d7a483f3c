// Bounded waits on a feed's snapshot.

/** Resolve with the first snapshot that satisfies `predicate`; reject after `timeoutMs`. */
export function waitFor(feed, predicate, timeoutMs = 10_000, what = 'condition') {
  return new Promise((resolve, reject) => {
    const check = () => {
      const snap = feed.getSnapshot()
      if (predicate(snap)) {
        done()
        resolve(snap)
      }
    }
    const timer = setTimeout(() => {
      done()
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last snapshot:\n${JSON.stringify(feed.getSnapshot(), null, 2)}`))
    }, timeoutMs)
    const unsubscribe = feed.subscribe(check)
    function done() {
      clearTimeout(timer)
      unsubscribe()
    }
    check()
  })
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * Live with every pair fresh: what a healthy feed of the simulated source reaches (its
 * `canTrade` stays false, because its prices are fake).
 */
export const allFresh = (s) =>
  s.state === 'live' && Object.keys(s.pairs).length > 0 && Object.values(s.pairs).every((p) => p.fresh)
