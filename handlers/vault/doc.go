// Package vault keeps users' OAuth tokens (the access_token and
// refresh_token of /sns/oauth2/access_token) encrypted in the NATS KV
// bucket wx_vault, so that a worker can fetch a user's current profile
// (/sns/userinfo) for as long as the refresh_token lives, without a new
// login.
//
// # Records
//
// One record per user, under the key u.<appid>.<openid>. The value is an
// Envelope: {"v":1,"kid":"<key id>","nonce":"...","ct":"..."}, where ct is
// the AES-256-GCM encryption (crypto/cipher, 12-byte random nonce) of the
// JSON of Tokens: access_token, refresh_token, scope, unionid,
// is_snapshotuser, the two expiry instants, when they were stored and,
// after a refresh, the revision it replaced. The GCM additional data is
// "wx_vault/v1/<appid>/<openid>", so a record copied under another user's
// key does not decrypt: records cannot be swapped. Nothing but the key id
// is in clear text, and the key itself only names the user (appid and
// openid are not credentials).
//
// Every record carries a per-message TTL (the bucket has LimitMarkerTTL):
// the refresh_token's remaining life, 30 days after the login by default
// (180 days for mobile apps, configurable per app). When it lapses the
// server deletes the record; the tokens are useless by then.
//
// # Reading what was written
//
// Every read of a record (Get, and so Fresh, Forget and Rotate) goes to
// the leader of the bucket's stream (a JetStream STREAM.MSG.GET), never
// to the replica on the connection's server: the bucket is replicated
// over three servers in production, and a KV Get is a direct get (every
// bucket nats.go makes has AllowDirect), which a follower answers from
// its own copy, possibly before it has applied the last writes. A Get
// right after a Store could then miss the Store (no record, or the one
// before), and a StoreIf on the revision it returned would lose. The
// leader has applied every write it acknowledged, so a read through it
// sees every write acknowledged before the read was sent. The price is
// that reads are not spread over the replicas, and a read waits for a
// leader while the stream elects one; the vault's reads are one per
// job, not a hot path.
//
// # Keys
//
// A Keyring holds one or more 32-byte keys, each with an id. The newest
// (the last one listed) encrypts; every one decrypts. Rotation: add a new
// key at the end of the ring on every process, restart them, then run
// Rotate (wxhub vault rotate), which re-encrypts every record under the
// newest key and retires the older keys' check records; the old keys can
// then be removed from the ring. A record written under an older key while
// Rotate runs (by a process not yet restarted) is re-encrypted too: after
// retiring, Rotate lists the records again, through the stream's leader.
// Rotate retires only keys its ring holds
// and has superseded: when the bucket has a check record of a key the
// ring lacks (a newer ring is in use elsewhere), it refuses with
// ErrMissingKey naming that key, changing nothing.
//
// A wrong or missing key must never look like an empty vault. Open keeps
// a check record per key id, k.<key id>, holding a known text encrypted
// under that key: Open fails when a configured key does not decrypt its
// check record (a wrong key file), and when the bucket has a check record
// for a key id that is not configured (records written under a key this
// process does not have). Open writes the check record of the newest key
// the first time it is used. Processes that start at once race to write
// it: one wins, and the others check the winner's record with their key
// (waiting for it when they are told of it before it is stored) rather
// than fail or write their own over it. The check record's GCM
// additional data is "wx_vault/v1/keycheck/<key id>", binding it to its
// key id as a record is bound to its user.
//
// # Refreshing, once
//
// Fresh returns a record whose access_token is valid, calling the given
// refresh function (GET /sns/oauth2/refresh_token) when it has expired.
// Concurrent callers for one user, in one process or many, refresh once:
// the refresher holds a short lock key l.<appid>.<openid> (created with a
// TTL, so a dead refresher's lock lapses) and the others watch the user's
// keys until the refreshed record is written. The lock is never renewed:
// instead the refresh call runs under a deadline of three quarters of
// LockTTL from the moment the lock was taken (the last quarter is the
// margin for storing the result and for NATS's latency), so a refresher
// never calls WeChat once its lock may have lapsed and a waiter may have
// taken it. A refresh cut so fails (wrapping context.DeadlineExceeded);
// the next caller refreshes afresh.
//
// # The refresh budget
//
// The lock is sized from the refresh, not the other way round: a refresh
// that behaves as configured is never cut. Options.RefreshTimeout is the
// longest a refresh may take, its retries included; for the worker that is
// RetryMaxElapsed (10 s of backoff on transient errors, whose last call
// may start just before the 10 s are up) plus the WeChat client's Timeout
// (10 s for that last call): 20 s, the default. LockTTL defaults to the
// shortest lock whose deadline covers RefreshTimeout plus RefreshSlack
// (1 s, for the read under the lock and the refresh's own work), in the
// whole seconds NATS counts key TTLs in: MinLockTTL, 28 s for the default
// (a 21 s deadline). Open refuses, with ErrOptions, a LockTTL that is
// shorter or not whole seconds; package handlers refuses a vault whose
// RefreshTimeout is shorter than its RetryMaxElapsed plus its client's
// Timeout. We chose to lengthen the lock rather than cap the retries to
// fit it: the retries and the timeout are what an operator tunes for
// WeChat, and a shorter lock would quietly shorten them; a longer lock
// costs only when a refresher dies holding it (the others wait up to
// LockTTL before refreshing themselves).
//
// A caller whose access_token WeChat rejected passes it with the revision
// it was read from (FreshRequest.Rejected, RejectedRevision). A record
// that a refresh of that revision or of a later one stored counts as
// refreshed already, even when it holds the same access_token (WeChat
// renews an unexpired token as itself): N reports of one rejected token
// cause one refresh. The revision alone does not tell: Rotate writes a
// new revision of the same tokens. So each refresh seals into the record
// the revision it replaced (Tokens.RefreshedFrom), which Rotate keeps: a
// re-encrypted record is still the rejected one, and is refreshed.
//
// # Forgetting
//
// A record found dead (its refresh_token expired, or WeChat answered
// 40030, 42002 or 42007) is deleted with ForgetIf and the revision that
// was read: if the user logged in again meanwhile, the new record is at a
// later revision and is kept (ChangedMeanwhile, not an error). Rotate
// drops expired records the same way. Forget deletes whatever is there;
// it is the operator's `wxhub vault forget`.
//
// # What never leaves the process
//
// The tokens are in clear only in memory. Tokens' LogValue redacts them,
// errors from this package never contain them, and nothing here publishes
// an event or a metric with them. A write the bucket refuses fails with
// nats.go's error under this package's words, its "nats: " said once
// (its handles are broker.NATSOnceJetStream and NATSOnceKeyValue), still matching errors.Is and errors.As.
//
// # Key bytes in memory
//
// What is zeroed: the key bytes ParseKeyring decodes from each line, as
// soon as that key's cipher is built (and when they are not a key, the
// wrong size or bad base64); the bytes ReadKeyringFile read from the
// file, once parsed (package config's ResolveSecrets zeroes the bytes it
// read from vault.keys_file likewise); the bytes NewKeyLine drew.
//
// What is not, because Go gives no way to: the AES key schedule that
// crypto/aes expands from a key and keeps inside the cipher.AEAD, for as
// long as the Keyring lives: the life of the process, since a Keyring
// has no Close and Rotate takes no key out of a running process (a key
// leaves when the processes restart with a ring without it); the keyring
// text as a Go string, which is immutable (WXHUB_VAULT_KEYS in the
// process's environment, config's Vault.Keys, the text ParseKeyring is
// given and ReadKeyringFile's copy of it); and any copy the runtime made
// (a stack moved as it grew, memory the garbage collector freed but has
// not reused). Zeroing shortens how long the bytes this package owns
// lie about; it does not make a core dump, a swapped page or a debugger
// attached to a worker safe: keep those off the workers' hosts.
package vault
