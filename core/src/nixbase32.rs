//! Nix's base-32 encoding, used in store path hash parts and in `sha256:` hashes of
//! narinfo files.
//!
//! Alphabet `0123456789abcdfghijklmnpqrsvwxyz` (no `e o u t`). Unlike RFC 4648 the
//! bytes are read from the end: output character `n` (counted from the right) holds
//! bits `5n .. 5n+5` of the little-endian number the bytes form. A 20-byte store path
//! hash is 32 characters; a 32-byte SHA-256 is 52.

/// The alphabet, in digit order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

/// Encodes `input` in Nix base-32.
pub fn encode(input: &[u8]) -> String {
    let len = encoded_len(input.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = input[i] as u16 >> j;
        let hi = if i + 1 < input.len() {
            (input[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

/// Decodes Nix base-32 into exactly `out_len` bytes; `None` for a wrong length, a
/// character outside the alphabet, or bits set beyond `out_len` bytes.
pub fn decode(input: &str, out_len: usize) -> Option<Vec<u8>> {
    if input.len() != encoded_len(out_len) {
        return None;
    }
    let mut out = vec![0u8; out_len];
    for (n, c) in input.bytes().rev().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u16;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        if i + 1 < out_len {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return None;
        }
    }
    Some(out)
}

/// Whether each byte is a Nix base-32 digit, by byte value.
const IS_DIGIT: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether `c` is a Nix base-32 digit. A table lookup: every store path a status
/// report or snapshot names is checked byte by byte, and the search of the alphabet
/// this replaces was a measurable part of decoding the reporter's snapshot.
pub fn is_digit(c: u8) -> bool {
    IS_DIGIT[c as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_exactly_the_alphabet() {
        for c in 0..=255u8 {
            assert_eq!(is_digit(c), ALPHABET.contains(&c), "{c}");
        }
    }

    #[test]
    fn matches_nix() {
        // `nix hash to-base32 sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=`
        // (the SHA-256 of the empty string).
        let empty = hex::decode("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .unwrap();
        assert_eq!(
            encode(&empty),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert_eq!(decode(&encode(&empty), 32).unwrap(), empty);
    }

    #[test]
    fn round_trips_and_rejects() {
        for n in [0usize, 1, 5, 20, 32, 64] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let s = encode(&bytes);
            assert_eq!(s.len(), encoded_len(n));
            assert_eq!(decode(&s, n).unwrap(), bytes);
        }
        assert!(decode("e", 1).is_none());
        assert!(decode("0000000", 5).is_none());
        // 52 digits carry 260 bits; the 4 above a SHA-256 must be zero.
        assert!(decode(&"z".repeat(52), 32).is_none());
        assert!(decode(&"z".repeat(32), 20).is_some());
    }
}
