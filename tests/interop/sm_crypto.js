#!/usr/bin/env node
// sm_crypto.js: a thin command-line face of sm-crypto (an independent JavaScript SM2/SM3/SM4
// implementation from npm, pinned in package.json) for tests/integration/gm_interop_npm.sh.
//
// Every binary value is lowercase hex on the command line and on stdout. Values are passed to
// sm-crypto as byte arrays, never as strings (a string would be taken as UTF-8 text). Formats
// are sm-crypto's own; the caller converts explicitly:
//   - public keys are 04||x||y (130 hex digits), private keys 64 hex digits;
//   - SM2 ciphertexts are x1||y1||C3||C2 (cipherMode 1, "C1C3C2") or x1||y1||C2||C3
//     (cipherMode 0), WITHOUT the 04 prefix of C1;
//   - signatures are raw r||s (128 hex digits) or DER;
//   - SM2 signatures hash Z with the given distinguishing ID (UTF-8), passed explicitly unless
//     it is "-"; sm-crypto's own default ID is "1234567812345678", as GM/T 0009's.
//
// Commands (exit 0 on success, 1 when verification/decryption fails, 2 on usage errors):
//   sm3 <msghex>                                   -> digest
//   hmac <keyhex> <msghex>                         -> HMAC-SM3
//   sm4 encrypt|decrypt ecb|cbc <keyhex> <ivhex|-> <datahex> [pad|nopad]
//                                                  -> output hex (PKCS#7 unless nopad)
//   keygen                                         -> "<privhex> <pubhex>"
//   pub <privhex>                                  -> 04||x||y
//   sign <privhex> <msghex> <id> [raw|der]         -> signature (raw r||s by default)
//   verify <pubhex> <msghex> <sighex> <id>         -> "ok" (exit 0) or "bad" (exit 1); the
//                                                     signature is raw if it is 128 hex digits,
//                                                     else DER
//     (an <id> of "-" leaves userId out, so that sm-crypto's own default ID is used)
//   encrypt <pubhex> <msghex> [1|0]                -> ciphertext in sm-crypto's form (mode 1 default)
//   decrypt <privhex> <cthex> [1|0]                -> plaintext hex; exit 1 if C3 does not match
//   ctr <keyhex> <ivhex> <datahex>                 -> SM4-CTR (128-bit big-endian counter, as OpenSSL)
//   gcm encrypt <keyhex> <ivhex> <aadhex> <pthex>  -> ciphertext||tag (16 bytes)
//   gcm decrypt <keyhex> <ivhex> <aadhex> <cthex||taghex> -> plaintext; exit 1 on a tag mismatch
// sm-crypto has SM4 ECB and CBC only: ctr and gcm are written out below (NIST SP 800-38A and
// 800-38D, plain and slow) over sm-crypto's SM4 block function, so that they share no code with
// dengbao or OpenSSL.
'use strict'

const {sm2, sm3, sm4} = require('sm-crypto')

function die(code, msg) {
  process.stderr.write(`sm_crypto.js: ${msg}\n`)
  process.exit(code)
}

function bytes(s, what) {
  if (typeof s !== 'string' || s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) {
    die(2, `${what}: not an even-length hex string`)
  }
  return Array.from(Buffer.from(s, 'hex'))
}

function hex(arr) {
  return Buffer.from(arr).toString('hex')
}

function need(args, n, usage) {
  if (args.length < n) die(2, `usage: ${usage}`)
}

function mode(s) {
  if (s === undefined || s === '1') return 1
  if (s === '0') return 0
  return die(2, `cipher mode must be 1 (C1C3C2) or 0 (C1C2C3), not '${s}'`)
}

// ---- SM4-CTR and SM4-GCM over sm-crypto's block function -----------------------------------

function block(key, b) {
  return sm4.encrypt(b, key, {mode: 'ecb', padding: 'none', output: 'array'})
}

function toBig(b) {
  return BigInt('0x' + (hex(b) || '0'))
}

function fromBig(x) {
  return Array.from(Buffer.from(x.toString(16).padStart(32, '0'), 'hex'))
}

// Multiplication in GF(2^128) with GCM's bit order (SP 800-38D, Algorithm 1).
const R = 0xe1n << 120n
function gmul(x, y) {
  let z = 0n
  let v = y
  for (let i = 127n; i >= 0n; i--) {
    if ((x >> i) & 1n) z ^= v
    v = v & 1n ? (v >> 1n) ^ R : v >> 1n
  }
  return z
}

function ghash(h, data) {
  let y = 0n
  for (let i = 0; i < data.length; i += 16) y = gmul(y ^ toBig(data.slice(i, i + 16)), h)
  return y
}

function pad16(b) {
  return b.concat(new Array((16 - (b.length % 16)) % 16).fill(0))
}

function len64(nbytes) {
  return Array.from(Buffer.from((BigInt(nbytes) * 8n).toString(16).padStart(16, '0'), 'hex'))
}

// ctr: the counter block is incremented as one 128-bit big-endian number (inc32 when `bits` is 32).
function ctrXor(key, counter, data, bits) {
  const mask = (1n << BigInt(bits)) - 1n
  let c = toBig(counter)
  const out = []
  for (let i = 0; i < data.length; i += 16) {
    const ks = block(key, fromBig(c))
    for (let j = i; j < Math.min(i + 16, data.length); j++) out.push(data[j] ^ ks[j - i])
    c = (c & ~mask) | ((c + 1n) & mask)
  }
  return out
}

function gcm(key, iv, aad, text, encrypting) {
  const h = toBig(block(key, new Array(16).fill(0)))
  const j0 = iv.length === 12 ? iv.concat([0, 0, 0, 1])
    : fromBig(ghash(h, pad16(iv).concat(new Array(8).fill(0), len64(iv.length))))
  const j1 = fromBig((toBig(j0) & ~0xffffffffn) | ((toBig(j0) + 1n) & 0xffffffffn))
  const out = ctrXor(key, j1, text, 32)
  const ct = encrypting ? out : text
  const s = ghash(h, pad16(aad).concat(pad16(ct), len64(aad.length), len64(ct.length)))
  const tag = fromBig(s ^ toBig(block(key, j0)))
  return {out, tag}
}

const [cmd, ...args] = process.argv.slice(2)
let out

switch (cmd) {
  case 'sm3':
    need(args, 1, 'sm3 <msghex>')
    out = sm3(bytes(args[0], 'msg'))
    break
  case 'hmac':
    need(args, 2, 'hmac <keyhex> <msghex>')
    out = sm3(bytes(args[1], 'msg'), {key: bytes(args[0], 'key'), mode: 'hmac'})
    break
  case 'sm4': {
    need(args, 5, 'sm4 encrypt|decrypt ecb|cbc <keyhex> <ivhex|-> <datahex> [pad|nopad]')
    const [dir, m, key, iv, data, pad] = args
    if (dir !== 'encrypt' && dir !== 'decrypt') die(2, `sm4: '${dir}' is not encrypt or decrypt`)
    if (m !== 'ecb' && m !== 'cbc') die(2, `sm4: mode '${m}' is not ecb or cbc`)
    const opts = {mode: m, output: 'array', padding: pad === 'nopad' ? 'none' : 'pkcs#7'}
    if (m === 'cbc') opts.iv = bytes(iv, 'iv')
    try {
      out = hex(sm4[dir](bytes(data, 'data'), bytes(key, 'key'), opts))
    } catch (e) {
      die(1, `sm4: ${e.message}`)
    }
    break
  }
  case 'keygen': {
    const kp = sm2.generateKeyPairHex()
    out = `${kp.privateKey} ${kp.publicKey}`
    break
  }
  case 'pub':
    need(args, 1, 'pub <privhex>')
    bytes(args[0], 'priv')
    out = sm2.getPublicKeyFromPrivateKey(args[0].toLowerCase())
    break
  case 'sign': {
    need(args, 3, 'sign <privhex> <msghex> <id> [raw|der]')
    const [priv, msg, id, form] = args
    bytes(priv, 'priv')
    out = sm2.doSignature(bytes(msg, 'msg'), priv.toLowerCase(), {
      hash: true,
      der: form === 'der',
      publicKey: sm2.getPublicKeyFromPrivateKey(priv.toLowerCase()),
      userId: id === '-' ? undefined : id,
    })
    break
  }
  case 'verify': {
    need(args, 4, 'verify <pubhex> <msghex> <sighex> <id>')
    const [pub, msg, sig, id] = args
    bytes(pub, 'pub')
    bytes(sig, 'sig')
    const good = sm2.doVerifySignature(bytes(msg, 'msg'), sig.toLowerCase(), pub.toLowerCase(), {
      hash: true,
      der: sig.length !== 128,
      userId: id === '-' ? undefined : id,
    })
    process.stdout.write(good ? 'ok\n' : 'bad\n')
    process.exit(good ? 0 : 1)
    break
  }
  case 'encrypt':
    need(args, 2, 'encrypt <pubhex> <msghex> [1|0]')
    bytes(args[0], 'pub')
    out = sm2.doEncrypt(bytes(args[1], 'msg'), args[0].toLowerCase(), mode(args[2]))
    break
  case 'decrypt': {
    need(args, 2, 'decrypt <privhex> <cthex> [1|0]')
    bytes(args[0], 'priv')
    bytes(args[1], 'ct')
    const pt = sm2.doDecrypt(args[1].toLowerCase(), args[0].toLowerCase(), mode(args[2]), {
      output: 'array',
    })
    if (!pt || pt.length === 0) die(1, 'decrypt: C3 does not match (or C1 is not on the curve)')
    out = hex(pt)
    break
  }
  case 'ctr': {
    need(args, 3, 'ctr <keyhex> <ivhex> <datahex>')
    const iv = bytes(args[1], 'iv')
    if (iv.length !== 16) die(2, 'ctr: the iv must be 16 bytes')
    out = hex(ctrXor(bytes(args[0], 'key'), iv, bytes(args[2], 'data'), 128))
    break
  }
  case 'gcm': {
    need(args, 5, 'gcm encrypt|decrypt <keyhex> <ivhex> <aadhex> <datahex>')
    const [dir, key, iv, aad, data] = args
    const k = bytes(key, 'key')
    const v = bytes(iv, 'iv')
    const a = bytes(aad, 'aad')
    let d = bytes(data, 'data')
    if (k.length !== 16 || v.length < 1) die(2, 'gcm: the key must be 16 bytes and the iv at least 1')
    if (dir === 'encrypt') {
      const r = gcm(k, v, a, d, true)
      out = hex(r.out) + hex(r.tag)
    } else if (dir === 'decrypt') {
      if (d.length < 16) die(2, 'gcm: input shorter than the tag')
      const tag = d.slice(d.length - 16)
      d = d.slice(0, d.length - 16)
      const r = gcm(k, v, a, d, false)
      if (hex(r.tag) !== hex(tag)) die(1, 'gcm: tag mismatch')
      out = hex(r.out)
    } else {
      die(2, `gcm: '${dir}' is not encrypt or decrypt`)
    }
    break
  }
  default:
    die(2, `unknown command '${cmd}' (sm3, hmac, sm4, ctr, gcm, keygen, pub, sign, verify, encrypt, decrypt)`)
}

process.stdout.write(`${out}\n`)
