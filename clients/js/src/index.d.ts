/** Connection state: `stale` means connected but the prices cannot be trusted as current. */
export type FeedState = 'connecting' | 'live' | 'stale' | 'reconnecting' | 'closed'

/** One price as received, plus the status the daemon last reported for its pair. */
export interface PairSnapshot {
  readonly pair: string
  /** Event id of the price (positive, increasing across pairs); null before the first price. */
  readonly id: number | null
  /** The decimal string from the wire, e.g. "64123.45": use it for anything that counts money. */
  readonly price: string | null
  /** `Number(price)`, for display and charts only. */
  readonly value: number | null
  /** RFC 3339 UTC time of the price, as sent by the daemon. */
  readonly ts: string | null
  /** `ts` in epoch milliseconds. */
  readonly tsMs: number | null
  /** Exchanges whose quotes made the price. */
  readonly sources: readonly string[]
  /**
   * The price comes from the daemon's simulated source (fake, for demos): never tradeable.
   * From the price's `simulated` field, or before the first price from the pair's status.
   */
  readonly simulated: boolean
  /** Local `now()` when the price arrived. */
  readonly receivedAt: number | null
  /** The daemon's verdict for the pair, `unknown` until its first `status` event. */
  readonly status: 'live' | 'stale' | 'suspect' | 'unknown' | (string & {})
  readonly statusSince: string | null
  readonly statusReason: string | null
  /** Connected, the daemon says live, and the price is younger than `staleAfterMs`. */
  readonly fresh: boolean
}

export interface FeedError {
  readonly message: string
  /** HTTP status, where the EventSource implementation reports one (Node's `eventsource` does; browsers do not). */
  readonly code?: number
  /** Local `now()` of the error. */
  readonly at: number
}

/** Why the daemon refused the credential; the feed is `closed` and does not retry. */
export interface AuthError {
  /** 401: no valid credential (log in, or a new token); 403: valid, but not for these pairs. */
  readonly code: 401 | 403
  /** The daemon's problem `detail` where it could be read, else a generic text. */
  readonly message: string
  /** The refused pairs a 403 names (empty otherwise). */
  readonly pairs: readonly string[]
}

/** Immutable; a new object only when something changed (safe for `useSyncExternalStore`). */
export interface PriceSnapshot {
  readonly state: FeedState
  /** True only when live, every subscribed pair is fresh, and none is simulated. */
  readonly canTrade: boolean
  /**
   * Why `canTrade` is false (human-readable); null when it is true. A live feed of fake
   * prices says `SIMULATED_REASON` ("Simulated prices: not for trading").
   */
  readonly reason: string | null
  /** Some subscribed pair's prices come from the simulated source (fake prices). */
  readonly simulated: boolean
  readonly pairs: Readonly<Record<string, PairSnapshot>>
  /** Resume point: the id of the last price seen. */
  readonly lastEventId: number | null
  /** Local `now()` of the last event of any kind. */
  readonly lastEventAt: number | null
  /** Alert resume point: the highest alert (firing) id seen, or `alertsAfter`; null before any. */
  readonly lastAlertId: number | null
  readonly lastError: FeedError | null
  /** Set when a 401/403 closed the feed (log in again, then make a new feed). */
  readonly authError: AuthError | null
}

export interface Tick {
  readonly pair: string
  readonly id: number
  readonly price: string
  readonly value: number
  readonly ts: string
  readonly tsMs: number
  readonly sources: readonly string[]
  /** The wire's `simulated` field: the simulated source went into this price. */
  readonly simulated: boolean
  readonly receivedAt: number
}

export interface StatusEvent {
  readonly pair: string
  readonly state: 'live' | 'stale' | 'suspect' | (string & {})
  readonly since: string | null
  readonly reason: string
  /** The pair's configured sources include the simulated one. */
  readonly simulated: boolean
}

export interface ResyncEvent {
  readonly reason: string
  readonly ticks: readonly Tick[]
}

/**
 * One firing of one of the owner's alert rules (the `alert` event; the stream's credential
 * needs the `alerts` scope). Each `id` is delivered at most once per feed.
 */
export interface Alert {
  /** The firing id: increasing per owner, the alert resume point. */
  readonly id: number
  readonly ruleId: number
  /** The price (tick) id that fired the rule; null for a test firing. */
  readonly tickId: number | null
  /** RFC 3339 time the firing was recorded. */
  readonly at: string
  /** A test firing (POST /api/alerts/rules/{id}/test): no price caused it. */
  readonly test: boolean
  readonly pair: string | null
  /** The rule's kind: `above`, `below`, `crosses_up`, `crosses_down`, `crosses`, `pct_move`. */
  readonly kind: string | null
  /** `up` / `down` for crossings and moves; null for `above` / `below` and test firings. */
  readonly direction: string | null
  /** Why it fired, for people, e.g. "BTC-USD 70001.5 crossed above 70000". */
  readonly detail: string
  /** The decimal string of the price that fired it (null for a test firing). */
  readonly price: string | null
  /** RFC 3339 time of that price. */
  readonly ts: string | null
  /** This is the rule's `count`-th firing. */
  readonly count: number | null
  readonly simulated: boolean
  /** The firing's `data` object as sent (newer daemons may add fields). */
  readonly data: Readonly<Record<string, unknown>>
}

export interface FeedEvents {
  price: Tick
  status: StatusEvent
  resync: ResyncEvent
  alert: Alert
}

/** The subset of the WHATWG EventSource constructor the client uses. */
export interface EventSourceLike {
  readonly readyState: number
  addEventListener(type: string, listener: (event: any) => void): void
  close(): void
}
export type FetchLike = (input: any, init?: any) => Promise<any>
export type EventSourceConstructor = new (
  url: string,
  init?: { withCredentials?: boolean; fetch?: FetchLike },
) => EventSourceLike

export interface PriceFeedOptions {
  /** The stream URL (default `/api/price-stream`, resolved against the page; absolute outside browsers). */
  url?: string
  /** Pairs to follow, e.g. `["BTC-USD"]`; empty follows every pair the daemon serves. */
  pairs?: readonly string[]
  /**
   * Send cookies cross-origin (the `bt_session` cookie of POST /api/login, when the page
   * is on another origin than the daemon, which must list it in its CORS allow-list).
   */
  withCredentials?: boolean
  /**
   * An API key (`btk_...`) or JWT, sent as `Authorization: Bearer` by an EventSource that
   * takes a `fetch` override (Node's `eventsource` package). A browser's own EventSource
   * cannot send headers: there, log in with POST /api/login and the cookie is used.
   */
  token?: string | null
  /**
   * Returns a (new) token: called before the first connection when `token` is not set,
   * after a `reauth` event, and once after a 401 (never twice without the daemon accepting
   * a token in between, so a refused token ends the feed instead of looping).
   */
  getToken?: (() => string | Promise<string>) | null
  /**
   * Called with the reason (`"expired"`, `"revoked"`) when the daemon ends the stream with
   * `reauth`; awaited before the client reconnects from the last id (log in again here).
   */
  onReauth?: ((reason: string) => void | Promise<void>) | null
  /** Called once when a 401/403 (or a failing `getToken`) closes the feed. */
  onError?: ((error: AuthError) => void) | null
  /** The fetch used with the credential and to learn a refused browser stream's status (default: global). */
  fetch?: FetchLike
  /**
   * Silence window in ms (default 120000): no event for this long, or a price older than
   * this, makes the feed stale. Use (daemon `feed.stale_after` + `feed.interval`) * 1000,
   * and never less than twice the interval: heartbeat comments are invisible to EventSource.
   * After twice the window with no event the client reconnects.
   */
  staleAfterMs?: number
  /** Tolerance for the difference between this clock and the daemon's (default 30000). */
  maxClockSkewMs?: number
  /** Resume after this event id (e.g. one saved before a page reload). */
  lastEventId?: number | null
  /**
   * Called with each alert event (a firing of the owner's rules), once per firing id;
   * the same as `feed.on('alert', ...)`. Needs a credential with the `alerts` scope.
   */
  onAlert?: ((alert: Alert) => void) | null
  /**
   * Resume alerts after this firing id (e.g. `lastAlertId` saved before a page reload):
   * the daemon first sends the firings above it. Without it, only alerts that fire after
   * the stream opened are delivered. Sent as `alerts_after`; the client moves it forward.
   */
  alertsAfter?: number | null
  /** An EventSource implementation (default: the global one; in Node use the `eventsource` package). */
  EventSource?: EventSourceConstructor
  /** The clock (default `Date.now`). */
  now?: () => number
}

export interface PriceFeed {
  subscribe(listener: () => void): () => void
  getSnapshot(): PriceSnapshot
  /** Every event as it arrives (the snapshot keeps only the latest price per pair). */
  on<K extends keyof FeedEvents>(type: K, handler: (event: FeedEvents[K]) => void): () => void
  /** Close the connection for good; the state becomes `closed`. */
  close(): void
}

export const DEFAULT_STALE_AFTER_MS: number
/** "Simulated prices: not for trading": the `reason` of a live feed of fake prices. */
export const SIMULATED_REASON: string
export const DEFAULT_MAX_CLOCK_SKEW_MS: number
/** A `reauth` this soon (ms) after the previous one reconnects with backoff, not at once. */
export const REAUTH_PACE_MS: number
export const CONNECTING_SNAPSHOT: PriceSnapshot
export function createPriceFeed(options?: PriceFeedOptions): PriceFeed
