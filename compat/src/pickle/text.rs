//! Helpers for the text opcodes of protocol 0 and for integer representations.

/// Python's `codecs.escape_decode` of the body of a `STRING` literal (`\n`, `\x41`, `\101`...).
/// Unknown escapes keep their backslash, as Python does. `None` for a truncated `\x` escape.
pub fn escape_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *s.get(i)?;
        i += 1;
        match e {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'x' => {
                let h = s.get(i..i + 2)?;
                let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                out.push(v);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match s.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Python's `raw-unicode-escape` decoding (`UNICODE` opcode): bytes are Latin-1 except
/// `\uXXXX` and `\UXXXXXXXX`.
pub fn raw_unicode_escape_decode(s: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'\\' && matches!(s.get(i + 1), Some(b'u') | Some(b'U')) {
            // An odd run of backslashes before u/U is an escape; Python counts them, we follow
            // the common case: a backslash directly before u/U starts an escape.
            let n = if s[i + 1] == b'u' { 4 } else { 8 };
            let h = s.get(i + 2..i + 2 + n)?;
            let v = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
            out.push(char::from_u32(v)?);
            i += 2 + n;
        } else {
            out.push(char::from(c));
            i += 1;
        }
    }
    Some(out)
}

/// The integer in minimal little-endian two's complement (an empty vector is 0), as `LONG1`.
pub fn i64_to_le(v: i64) -> Vec<u8> {
    let mut b = v.to_le_bytes().to_vec();
    minimise(&mut b);
    b
}

/// Drops redundant sign bytes from little-endian two's-complement `b`.
pub fn minimise(b: &mut Vec<u8>) {
    while let Some(&last) = b.last() {
        let prev_neg = b.len() >= 2 && b[b.len() - 2] & 0x80 != 0;
        if (last == 0 && (b.len() == 1 || !prev_neg)) || (last == 0xff && b.len() >= 2 && prev_neg)
        {
            b.pop();
        } else {
            break;
        }
    }
}

/// Little-endian two's-complement bytes as an `i64`, if they fit.
pub fn le_to_i64(b: &[u8]) -> Option<i64> {
    if b.len() > 8 {
        return None;
    }
    if b.is_empty() {
        return Some(0);
    }
    let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
    let mut buf = [fill; 8];
    buf[..b.len()].copy_from_slice(b);
    Some(i64::from_le_bytes(buf))
}

/// A decimal integer (optional sign) as minimal little-endian two's complement. Quadratic in
/// the number of digits, so callers bound the length first.
pub fn decimal_to_le(s: &str) -> Option<Vec<u8>> {
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit() || c == b'_') {
        return None;
    }
    // Magnitude as little-endian base-2^32 limbs.
    let mut limbs: Vec<u32> = Vec::new();
    for c in digits.bytes().filter(|&c| c != b'_') {
        let mut carry = u64::from(c - b'0');
        for l in limbs.iter_mut() {
            let v = u64::from(*l) * 10 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            limbs.push(carry as u32);
        }
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    bytes.push(0); // room for the sign bit
    if neg {
        // two's complement: invert and add one
        let mut carry = true;
        for b in bytes.iter_mut() {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    minimise(&mut bytes);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_round_trip_through_le_bytes() {
        for v in [
            0i64,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            256,
            i64::MAX,
            i64::MIN,
        ] {
            let b = i64_to_le(v);
            assert_eq!(le_to_i64(&b), Some(v), "{v}");
            assert_eq!(decimal_to_le(&v.to_string()), Some(b), "{v}");
        }
        assert_eq!(i64_to_le(0), Vec::<u8>::new());
        assert_eq!(i64_to_le(255), vec![0xff, 0]);
        assert_eq!(i64_to_le(-256), vec![0, 0xff]);
        assert_eq!(
            decimal_to_le("18446744073709551616"),
            Some(vec![0, 0, 0, 0, 0, 0, 0, 0, 1])
        );
        assert_eq!(decimal_to_le("12a"), None);
    }

    #[test]
    fn escapes_decode_like_python() {
        assert_eq!(escape_decode(br"a\n\x41\101\\\'q").unwrap(), b"a\nAA\\'q");
        assert_eq!(escape_decode(br"\x4"), None);
        assert_eq!(
            raw_unicode_escape_decode(b"h\xe9\\u2603").unwrap(),
            "h\u{e9}\u{2603}"
        );
    }
}
