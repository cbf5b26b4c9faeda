// Independent relying party for mimoto's OpenID Connect provider.
//
// Uses panva's openid-client (an OpenID-certified RP library) to run a full
// authorization code flow with pushed authorization requests (RFC 9126),
// PKCE S256 (RFC 7636) and private_key_jwt client authentication, acting as
// the browser itself (the provider under test must complete the login
// without user interaction). It then checks the ID token and that the
// authorization code cannot be redeemed twice.
//
// Output: one JSON line per check on stdout, then "N passed, M failed".
// Exit code 0 only if every check passed. No token, code or claim value is
// ever printed: only claim names and pass/fail.

import * as client from 'openid-client'

const MAX_HOPS = 10
const HOP_TIMEOUT_MS = 15_000
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]', '::1'])
// Parameters the RP itself controls; AUTHORIZE_EXTRA may not override them.
const RESERVED_PARAMS = new Set([
  'client_id', 'redirect_uri', 'response_type', 'scope', 'state', 'nonce',
  'code_challenge', 'code_challenge_method', 'request_uri', 'request',
  'client_assertion', 'client_assertion_type',
])

let passed = 0
let failed = 0

function report (check, ok, detail) {
  if (ok) passed++
  else failed++
  process.stdout.write(JSON.stringify({ check, ok: Boolean(ok), detail: String(detail) }) + '\n')
  return Boolean(ok)
}

function finish () {
  process.stdout.write(`${passed} passed, ${failed} failed\n`)
  process.exitCode = failed === 0 && passed > 0 ? 0 : 1
}

class Abort extends Error {}

// fatal reports a failed check and stops the run (later steps depend on it).
function fatal (check, detail) {
  report(check, false, detail)
  throw new Abort()
}

// describe renders an error without secrets: only messages, OAuth error
// codes and HTTP statuses (never response bodies, tokens or claim values).
function describe (err) {
  if (err == null) return String(err)
  const parts = []
  if (err.name && err.name !== 'Error') parts.push(err.name)
  if (typeof err.error === 'string') {
    parts.push(`error=${err.error}`)
    if (typeof err.error_description === 'string') parts.push(`error_description=${JSON.stringify(err.error_description)}`)
  }
  if (typeof err.status === 'number') parts.push(`status=${err.status}`)
  if (err.message) parts.push(err.message)
  if (typeof err.code === 'string') parts.push(`(${err.code})`)
  const cause = err.cause
  if (cause instanceof Error) {
    parts.push(`cause: ${cause.message}`)
    if (typeof cause.code === 'string') parts.push(`(${cause.code})`)
    if (cause.cause instanceof Error && typeof cause.cause.code === 'string') parts.push(`(${cause.cause.code})`)
  } else if (typeof Response !== 'undefined' && cause instanceof Response) {
    parts.push(`cause: HTTP ${cause.status}`)
  } else if (cause && typeof cause.code === 'string') {
    parts.push(`cause: ${cause.code}`)
  }
  return parts.join(' ')
}

function parseJsonObject (name, raw) {
  let v
  try {
    v = JSON.parse(raw)
  } catch (err) {
    throw new Error(`${name} is not valid JSON: ${err.message}`)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new Error(`${name} must be a JSON object`)
  }
  return v
}

function isJsonEqual (a, b) {
  if (a === b) return true
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a)) {
    return a.length === b.length && a.every((v, i) => isJsonEqual(v, b[i]))
  }
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && isJsonEqual(a[k], b[k]))
}

async function readConfig () {
  const env = process.env
  const missing = ['ISSUER', 'CLIENT_ID', 'CLIENT_PRIVATE_JWK', 'REDIRECT_URI'].filter((k) => !env[k])
  if (missing.length) throw new Error(`missing required environment variable(s): ${missing.join(', ')}`)

  let issuerUrl
  try {
    issuerUrl = new URL(env.ISSUER)
  } catch {
    throw new Error('ISSUER is not a valid URL')
  }
  const loopback = LOOPBACK_HOSTS.has(issuerUrl.hostname)
  if (issuerUrl.protocol !== 'https:' && !(issuerUrl.protocol === 'http:' && loopback)) {
    throw new Error('ISSUER must use https (plain http is only allowed for 127.0.0.1, localhost or ::1)')
  }

  try {
    new URL(env.REDIRECT_URI) // eslint-disable-line no-new
  } catch {
    throw new Error('REDIRECT_URI is not a valid URL')
  }

  const scope = env.SCOPE || 'openid'
  if (!scope.split(' ').includes('openid')) throw new Error('SCOPE must include "openid"')

  const jwk = parseJsonObject('CLIENT_PRIVATE_JWK', env.CLIENT_PRIVATE_JWK)
  if (jwk.kty !== 'EC' || jwk.crv !== 'P-256') throw new Error('CLIENT_PRIVATE_JWK must be an EC P-256 key')
  if (typeof jwk.d !== 'string') throw new Error('CLIENT_PRIVATE_JWK must be a private key (missing "d")')
  if (typeof jwk.kid !== 'string' || jwk.kid === '') throw new Error('CLIENT_PRIVATE_JWK must have a "kid"')
  if (jwk.alg !== 'ES256') throw new Error('CLIENT_PRIVATE_JWK must have "alg": "ES256"')
  let key
  try {
    key = await crypto.subtle.importKey(
      'jwk',
      { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, d: jwk.d },
      { name: 'ECDSA', namedCurve: 'P-256' },
      false,
      ['sign'],
    )
  } catch (err) {
    throw new Error(`CLIENT_PRIVATE_JWK could not be imported: ${err.message}`)
  }

  const expectClaims = env.EXPECT_CLAIMS ? parseJsonObject('EXPECT_CLAIMS', env.EXPECT_CLAIMS) : {}
  const extraRaw = env.AUTHORIZE_EXTRA ? parseJsonObject('AUTHORIZE_EXTRA', env.AUTHORIZE_EXTRA) : {}
  const authorizeExtra = {}
  for (const [k, v] of Object.entries(extraRaw)) {
    if (RESERVED_PARAMS.has(k)) throw new Error(`AUTHORIZE_EXTRA may not set "${k}" (controlled by the RP)`)
    authorizeExtra[k] = typeof v === 'string' ? v : JSON.stringify(v)
  }

  return {
    issuer: env.ISSUER,
    issuerUrl,
    loopback,
    clientId: env.CLIENT_ID,
    privateKey: { key, kid: jwk.kid },
    redirectUri: env.REDIRECT_URI,
    scope,
    expectClaims,
    authorizeExtra,
  }
}

// Minimal cookie jar: name=value pairs per host, no path/attribute handling
// beyond deletion via Max-Age<=0 or an empty value.
class CookieJar {
  #hosts = new Map()

  store (url, response) {
    const setCookies = typeof response.headers.getSetCookie === 'function' ? response.headers.getSetCookie() : []
    if (!setCookies.length) return
    let jar = this.#hosts.get(url.hostname)
    if (!jar) this.#hosts.set(url.hostname, (jar = new Map()))
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(';')
      const eq = pair.indexOf('=')
      if (eq <= 0) continue
      const name = pair.slice(0, eq).trim()
      const value = pair.slice(eq + 1).trim()
      const expired = attrs.some((a) => {
        const [an, av] = a.split('=')
        return an.trim().toLowerCase() === 'max-age' && Number(av) <= 0
      })
      if (expired || value === '') jar.delete(name)
      else jar.set(name, value)
    }
  }

  header (url) {
    const jar = this.#hosts.get(url.hostname)
    if (!jar || jar.size === 0) return undefined
    return [...jar].map(([n, v]) => `${n}=${v}`).join('; ')
  }
}

// Act as the browser: follow redirects from the authorization URL until the
// provider redirects to REDIRECT_URI. Returns the callback URL and hop count.
async function followToCallback (authorizationUrl, redirectUri) {
  const jar = new CookieJar()
  let url = authorizationUrl
  for (let hop = 1; hop <= MAX_HOPS; hop++) {
    const where = `hop ${hop}: GET ${url.origin}${url.pathname}`
    const headers = { accept: 'text/html,application/json;q=0.9,*/*;q=0.8' }
    const cookie = jar.header(url)
    if (cookie) headers.cookie = cookie
    let res
    try {
      res = await fetch(url, { redirect: 'manual', headers, signal: AbortSignal.timeout(HOP_TIMEOUT_MS) })
    } catch (err) {
      throw new Error(`${where} failed: ${describe(err)}`)
    }
    jar.store(url, res)
    const location = res.headers.get('location')
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel()
      if (location.startsWith(redirectUri)) return { callback: new URL(location), hops: hop }
      let next
      try {
        next = new URL(location, url)
      } catch {
        throw new Error(`${where} returned HTTP ${res.status} with an unparsable Location header`)
      }
      if (next.href.startsWith(redirectUri)) return { callback: next, hops: hop }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new Error(`${where} redirected to a non-http(s) URL (scheme ${next.protocol}) that is not REDIRECT_URI`)
      }
      url = next
      continue
    }
    // Not a redirect: describe the page without echoing it (it may carry identity data).
    let info = ''
    const ctype = res.headers.get('content-type') || 'no content-type'
    if (ctype.includes('json')) {
      try {
        const body = await res.json()
        if (body && typeof body.error === 'string') {
          info = ` error=${body.error}`
          if (typeof body.error_description === 'string') info += ` error_description=${JSON.stringify(body.error_description)}`
        }
      } catch { /* ignore */ }
    } else {
      await res.body?.cancel()
    }
    if (res.status >= 400) throw new Error(`${where} returned HTTP ${res.status} (${ctype})${info}`)
    throw new Error(`${where} returned a non-redirect page, HTTP ${res.status} (${ctype})${info}; the provider must complete the login without interaction`)
  }
  throw new Error(`REDIRECT_URI not reached after ${MAX_HOPS} redirects`)
}

async function main () {
  // 1. configuration
  let cfg
  try {
    cfg = await readConfig()
  } catch (err) {
    fatal('config', err.message)
  }
  report('config', true, `issuer ${cfg.issuer}, client_id set, ES256 key kid set, scope "${cfg.scope}", ` +
    `${Object.keys(cfg.expectClaims).length} expected claim(s), extra authorization params: [${Object.keys(cfg.authorizeExtra).join(', ')}]` +
    (cfg.loopback && cfg.issuerUrl.protocol === 'http:' ? ', insecure http allowed (loopback issuer)' : ''))

  // 2. discovery with private_key_jwt client authentication
  let config
  try {
    config = await client.discovery(
      cfg.issuerUrl,
      cfg.clientId,
      { token_endpoint_auth_method: 'private_key_jwt' },
      client.PrivateKeyJwt(cfg.privateKey),
      cfg.loopback && cfg.issuerUrl.protocol === 'http:' ? { execute: [client.allowInsecureRequests] } : undefined,
    )
  } catch (err) {
    fatal('discovery', describe(err))
  }
  const md = config.serverMetadata()
  if (md.issuer !== cfg.issuer) {
    fatal('discovery', 'metadata "issuer" is not exactly equal to ISSUER (OpenID Connect Discovery requires an exact match)')
  }
  report('discovery', true, 'metadata fetched, "issuer" equals ISSUER')

  report('metadata.par', typeof md.pushed_authorization_request_endpoint === 'string',
    typeof md.pushed_authorization_request_endpoint === 'string'
      ? 'pushed_authorization_request_endpoint advertised'
      : 'pushed_authorization_request_endpoint missing')
  const authMethods = md.token_endpoint_auth_methods_supported
  report('metadata.private_key_jwt', Array.isArray(authMethods) && authMethods.includes('private_key_jwt'),
    `token_endpoint_auth_methods_supported: ${JSON.stringify(authMethods ?? null)}`)
  const pkce = md.code_challenge_methods_supported
  report('metadata.pkce_s256', Array.isArray(pkce) && pkce.includes('S256'),
    `code_challenge_methods_supported: ${JSON.stringify(pkce ?? null)}`)
  report('metadata.iss_parameter', md.authorization_response_iss_parameter_supported === true,
    `authorization_response_iss_parameter_supported: ${JSON.stringify(md.authorization_response_iss_parameter_supported ?? null)}`)
  if (typeof md.pushed_authorization_request_endpoint !== 'string') throw new Abort()

  // 3. PKCE, state, nonce; pushed authorization request
  const pkceCodeVerifier = client.randomPKCECodeVerifier()
  const codeChallenge = await client.calculatePKCECodeChallenge(pkceCodeVerifier)
  const state = client.randomState()
  const nonce = client.randomNonce()
  let authorizationUrl
  try {
    authorizationUrl = await client.buildAuthorizationUrlWithPAR(config, {
      ...cfg.authorizeExtra,
      response_type: 'code',
      redirect_uri: cfg.redirectUri,
      scope: cfg.scope,
      code_challenge: codeChallenge,
      code_challenge_method: 'S256',
      state,
      nonce,
    })
  } catch (err) {
    fatal('par', describe(err))
  }
  const authParams = [...authorizationUrl.searchParams.keys()].sort()
  report('par', isJsonEqual(authParams, ['client_id', 'request_uri']) && authorizationUrl.searchParams.get('client_id') === cfg.clientId,
    `request_uri obtained; authorization URL carries only [${authParams.join(', ')}]`)

  // 4. act as the browser
  let callback
  try {
    const r = await followToCallback(authorizationUrl, cfg.redirectUri)
    callback = r.callback
    report('authorize', true, `provider redirected to REDIRECT_URI after ${r.hops} hop(s) without interaction`)
  } catch (err) {
    fatal('authorize', err.message)
  }
  const cbParams = callback.searchParams
  if (cbParams.has('error')) {
    const desc = cbParams.get('error_description')
    fatal('callback', `authorization error response: error=${cbParams.get('error')}` + (desc ? ` error_description=${JSON.stringify(desc)}` : ''))
  }
  report('callback', cbParams.has('code') && cbParams.has('state'),
    `callback parameters: [${[...new Set(cbParams.keys())].sort().join(', ')}]`)
  const iss = cbParams.get('iss')
  report('callback.iss', iss === cfg.issuer,
    iss === null ? 'callback is missing the "iss" parameter (RFC 9207)'
      : iss === cfg.issuer ? '"iss" parameter equals ISSUER (RFC 9207)'
        : '"iss" parameter differs from ISSUER (RFC 9207)')

  // 5. token request (private_key_jwt + PKCE verifier), ID token validation
  const checks = { pkceCodeVerifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true }
  let tokens
  try {
    tokens = await client.authorizationCodeGrant(config, new URL(callback.href), checks)
  } catch (err) {
    fatal('token', describe(err))
  }
  const claims = tokens.claims()
  report('token', typeof tokens.access_token === 'string' && typeof tokens.id_token === 'string' && claims !== undefined,
    `token_type=${tokens.token_type}; access_token ${typeof tokens.access_token === 'string' ? 'present' : 'MISSING'}; ` +
    'id_token present and validated by openid-client (signature, iss, aud, exp, iat, nonce, state, iss response parameter); ' +
    `claim names: [${Object.keys(claims ?? {}).sort().join(', ')}]`)
  if (!claims) throw new Abort()

  // 6. ID token claims
  report('id_token.iss', claims.iss === cfg.issuer, claims.iss === cfg.issuer ? 'equals ISSUER' : 'does not equal ISSUER')
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud]
  const audOk = aud.includes(cfg.clientId) && (aud.length === 1 || claims.azp === cfg.clientId)
  report('id_token.aud', audOk, audOk ? 'contains CLIENT_ID' + (aud.length > 1 ? ' (multiple audiences, azp equals CLIENT_ID)' : '')
    : aud.includes(cfg.clientId) ? 'multiple audiences but azp does not equal CLIENT_ID' : 'does not contain CLIENT_ID')
  report('id_token.sub', typeof claims.sub === 'string' && claims.sub.length > 0,
    typeof claims.sub === 'string' && claims.sub.length > 0 ? 'present' : 'missing or empty')
  report('id_token.nonce', claims.nonce === nonce, claims.nonce === nonce ? 'equals the nonce sent' : 'does not equal the nonce sent')
  for (const [name, expected] of Object.entries(cfg.expectClaims)) {
    const present = Object.hasOwn(claims, name)
    const ok = present && isJsonEqual(claims[name], expected)
    report(`id_token.claim.${name}`, ok, !present ? 'missing' : ok ? 'present, value as expected' : 'present, value differs from expected')
  }

  // 7. replay: the same authorization code must be refused (fresh client assertion)
  try {
    await client.authorizationCodeGrant(config, new URL(callback.href), checks)
    report('replay', false, 'second redemption of the same authorization code was accepted')
  } catch (err) {
    const ok = err instanceof client.ResponseBodyError && err.error === 'invalid_grant'
    report('replay', ok, ok ? 'second redemption refused with invalid_grant' : `expected OAuth error invalid_grant, got: ${describe(err)}`)
  }
}

try {
  await main()
} catch (err) {
  if (!(err instanceof Abort)) report('unexpected', false, describe(err))
}
finish()
