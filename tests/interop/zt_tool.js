#!/usr/bin/env node
// zt_tool.js: tokens and device signatures made by independent implementations from npm, for
// the gateway's zero-trust tests (tests/integration/gateway_zt.sh, gateway_zt_etcd.sh,
// bench/gateway_zt/run.sh). JWTs are minted by `jose` (HS256, ES256, RS256); SM2 device keys,
// SM3 thumbprints and SM2 signatures come from `sm-crypto` (SM3 digest with Z and the default
// ID 1234567812345678, raw r||s in base64url), both pinned in tests/interop/package.json.
// Nothing here shares code with dengbao or OpenSSL's SM2, so a token or signature the gateway
// accepts proves interoperability, not agreement with itself.
//
// Commands (output on stdout; exit 2 on usage errors):
//   jwks OUT.json PEM:KID[:ALG]... [sm2:PUBHEX:KID]...
//        a JWKS of the public halves of PEM keys (P-256 -> ES256, RSA -> RS256) and of SM2
//        public keys given as 04||x||y hex (kty EC, crv SM2)
//   jwt ALG KEYFILE CLAIMS_JSON [KID]
//        a compact JWS by jose: HS256 (KEYFILE raw secret, one trailing LF dropped, as the
//        gateway reads hs256_secret_file), ES256 / RS256 (KEYFILE a PEM private key)
//   none CLAIMS_JSON                    an unsigned token (alg "none", empty signature)
//   confuse PUBPEM CLAIMS_JSON KID      HS256 keyed with the bytes of a public key PEM (the
//                                       classic RS/ES -> HS algorithm-confusion token)
//   tamper TOKEN CLAIMS_JSON            the token's payload replaced, header and signature kept
//   devkey PRIV_OUT PUB_PEM_OUT         an SM2 key pair by sm-crypto: PRIV_OUT holds
//                                       "<privhex> <pubhex>", PUB_PEM_OUT the SubjectPublicKeyInfo
//                                       PEM; prints the SM3 thumbprint (cnf.sm3)
//   thumb PUB_PEM                       the SM3 thumbprint of an SM2 public key PEM (by sm-crypto)
//   x5t CERT_PEM                        base64url(SHA-256(certificate DER)): cnf "x5t#S256"
//   sign-token PRIV TOKEN               X-SM2-Signature over the exact token bytes
//   sign-request PRIV METHOD PATH QUERY BODYFILE|- [TS [NONCE]]
//                                       the four request-mode headers, one "Name: value" a line
//                                       (TS default now; NONCE default 22 random characters)
//   sign-requests PRIV METHOD PATH QUERY N OUT
//                                       N signed requests (fresh nonces, ts now), one line each:
//                                       "<ts> <nonce> <sig> <content-sm3>" (empty body)
'use strict'

const fs = require('fs')
const crypto = require('crypto')
const path = require('path')
const nm = path.join(__dirname, 'node_modules')
const jose = require(path.join(nm, 'jose'))
const {sm2, sm3} = require(path.join(nm, 'sm-crypto'))

function die(code, msg) {
  process.stderr.write(`zt_tool.js: ${msg}\n`)
  process.exit(code)
}
const b64u = (buf) => Buffer.from(buf).toString('base64url')
const hexToB64u = (h) => b64u(Buffer.from(h, 'hex'))
const bytes = (b) => Array.from(Buffer.isBuffer(b) ? b : Buffer.from(b, 'utf8'))
// The SubjectPublicKeyInfo DER prefix of an SM2 key (id-ecPublicKey, curve 1.2.156.10197.1.301).
const SM2_SPKI = '3059301306072a8648ce3d020106082a811ccf5501822d034200'

function sm2sign(msg, priv, pub) {
  return hexToB64u(sm2.doSignature(bytes(msg), priv, {hash: true, der: false, publicKey: pub}))
}
function readPriv(file) {
  const [priv, pub] = fs.readFileSync(file, 'utf8').trim().split(/\s+/)
  if (!/^[0-9a-f]{64}$/.test(priv || '') || !/^04[0-9a-f]{128}$/.test(pub || '')) {
    die(2, `${file}: not "<privhex> <pubhex>"`)
  }
  return {priv, pub}
}
function pubHexFromPem(file) {
  const der = crypto.createPublicKey(fs.readFileSync(file)).export({type: 'spki', format: 'der'})
  const h = der.toString('hex')
  if (!h.startsWith(SM2_SPKI) || h.length !== SM2_SPKI.length + 130) die(2, `${file}: not an SM2 public key`)
  return h.slice(SM2_SPKI.length)
}
function thumb(pubHex) {
  return hexToB64u(sm3(Array.from(Buffer.from(pubHex, 'hex'))))
}
function claims(s) {
  try {
    return JSON.parse(s)
  } catch (e) {
    return die(2, `claims: not JSON: ${e.message}`)
  }
}
function nonce() {
  return b64u(crypto.randomBytes(16)).slice(0, 22)
}
function canon(method, p, query, ts, n, bodySm3) {
  return [method, p, query, String(ts), n, bodySm3].join('\n')
}

async function main() {
  const [cmd, ...a] = process.argv.slice(2)
  switch (cmd) {
    case 'jwks': {
      if (a.length < 2) die(2, 'usage: jwks OUT PEM:KID[:ALG]... [sm2:PUBHEX:KID]...')
      const keys = []
      for (const spec of a.slice(1)) {
        const parts = spec.split(':')
        if (parts[0] === 'sm2') {
          const pub = parts[1]
          if (!/^04[0-9a-f]{128}$/.test(pub)) die(2, 'sm2:PUBHEX:KID needs 04||x||y hex')
          keys.push({kty: 'EC', crv: 'SM2', kid: parts[2], x: hexToB64u(pub.slice(2, 66)),
            y: hexToB64u(pub.slice(66))})
          continue
        }
        const [file, kid, alg] = parts
        const jwk = crypto.createPublicKey(fs.readFileSync(file)).export({format: 'jwk'})
        const k = {...jwk, kid}
        if (alg) k.alg = alg
        keys.push(k)
      }
      fs.writeFileSync(a[0], JSON.stringify({keys}))
      return
    }
    case 'jwt': {
      if (a.length < 3) die(2, 'usage: jwt ALG KEYFILE CLAIMS_JSON [KID]')
      const [alg, file, c, kid] = a
      let key
      if (alg === 'HS256') {
        let s = fs.readFileSync(file)
        if (s.length && s[s.length - 1] === 0x0a) s = s.subarray(0, s.length - 1)
        key = new Uint8Array(s)
      } else if (alg === 'ES256' || alg === 'RS256') {
        key = crypto.createPrivateKey(fs.readFileSync(file))
      } else {
        die(2, `jwt: alg ${alg} (HS256, ES256, RS256)`)
      }
      const hdr = {alg, typ: 'JWT'}
      if (kid) hdr.kid = kid
      process.stdout.write(await new jose.SignJWT(claims(c)).setProtectedHeader(hdr).sign(key))
      return
    }
    case 'none': {
      if (a.length < 1) die(2, 'usage: none CLAIMS_JSON')
      const h = b64u(JSON.stringify({alg: 'none', typ: 'JWT'}))
      process.stdout.write(`${h}.${b64u(JSON.stringify(claims(a[0])))}.`)
      return
    }
    case 'confuse': {
      if (a.length < 3) die(2, 'usage: confuse PUBPEM CLAIMS_JSON KID')
      const secret = new Uint8Array(fs.readFileSync(a[0]))
      process.stdout.write(await new jose.SignJWT(claims(a[1]))
        .setProtectedHeader({alg: 'HS256', typ: 'JWT', kid: a[2]}).sign(secret))
      return
    }
    case 'tamper': {
      if (a.length < 2) die(2, 'usage: tamper TOKEN CLAIMS_JSON')
      const [h, , s] = a[0].split('.')
      process.stdout.write(`${h}.${b64u(JSON.stringify(claims(a[1])))}.${s}`)
      return
    }
    case 'devkey': {
      if (a.length < 2) die(2, 'usage: devkey PRIV_OUT PUB_PEM_OUT')
      const k = sm2.generateKeyPairHex()
      let pub = k.publicKey
      if (pub.length !== 130) pub = sm2.getPublicKeyFromPrivateKey(k.privateKey)
      fs.writeFileSync(a[0], `${k.privateKey} ${pub}\n`, {mode: 0o600})
      const der = Buffer.from(SM2_SPKI + pub, 'hex').toString('base64').replace(/(.{64})/g, '$1\n')
      fs.writeFileSync(a[1], `-----BEGIN PUBLIC KEY-----\n${der.replace(/\n$/, '')}\n-----END PUBLIC KEY-----\n`)
      process.stdout.write(thumb(pub))
      return
    }
    case 'thumb': {
      if (a.length < 1) die(2, 'usage: thumb PUB_PEM')
      process.stdout.write(thumb(pubHexFromPem(a[0])))
      return
    }
    case 'x5t': {
      if (a.length < 1) die(2, 'usage: x5t CERT_PEM')
      const c = new crypto.X509Certificate(fs.readFileSync(a[0]))
      process.stdout.write(b64u(crypto.createHash('sha256').update(c.raw).digest()))
      return
    }
    case 'sign-token': {
      if (a.length < 2) die(2, 'usage: sign-token PRIV TOKEN')
      const k = readPriv(a[0])
      process.stdout.write(sm2sign(a[1], k.priv, k.pub))
      return
    }
    case 'sign-request': {
      if (a.length < 5) die(2, 'usage: sign-request PRIV METHOD PATH QUERY BODYFILE|- [TS [NONCE]]')
      const k = readPriv(a[0])
      const body = a[4] === '-' ? Buffer.alloc(0) : fs.readFileSync(a[4])
      const ts = a[5] || String(Math.floor(Date.now() / 1000))
      const n = a[6] || nonce()
      const bodySm3 = hexToB64u(sm3(bytes(body)))
      const sig = sm2sign(canon(a[1], a[2], a[3], ts, n, bodySm3), k.priv, k.pub)
      process.stdout.write(`X-SM2-Signature: ${sig}\nX-SM2-Timestamp: ${ts}\n` +
        `X-SM2-Nonce: ${n}\nX-Content-SM3: ${bodySm3}\n`)
      return
    }
    case 'sign-requests': {
      if (a.length < 6) die(2, 'usage: sign-requests PRIV METHOD PATH QUERY N OUT')
      const k = readPriv(a[0])
      const bodySm3 = hexToB64u(sm3([]))
      const out = []
      const ts = String(Math.floor(Date.now() / 1000))
      for (let i = 0; i < parseInt(a[4], 10); i++) {
        const n = nonce()
        out.push(`${ts} ${n} ${sm2sign(canon(a[1], a[2], a[3], ts, n, bodySm3), k.priv, k.pub)} ${bodySm3}`)
      }
      fs.writeFileSync(a[5], out.join('\n') + '\n')
      return
    }
    default:
      die(2, 'commands: jwks jwt none confuse tamper devkey thumb x5t sign-token sign-request sign-requests')
  }
}
main().catch((e) => die(2, e.message))
