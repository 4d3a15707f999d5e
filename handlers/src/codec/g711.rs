//! G.711 μ-law and A-law (PROTOCOLS.md §9.1, §9.2).
//!
//! Encoders follow the 16-bit, magnitude-first algorithm (Reese and Campbell, as shipped in
//! SoX); decoders are 256-entry tables built at compile time from the reference formulas.

const MULAW_BIAS: i32 = 0x84;
const MULAW_CLIP: i32 = 32635;

/// μ-law silence (decodes to 0).
pub const MULAW_SILENCE: u8 = 0xFF;

/// Encodes one 16-bit linear sample as μ-law.
#[inline]
pub fn mulaw_encode(sample: i16) -> u8 {
    let s = sample as i32;
    let sign = if s < 0 { 0x80 } else { 0x00 };
    let magnitude = s.abs().min(MULAW_CLIP) + MULAW_BIAS;
    // magnitude is in 132..=32767, so magnitude >> 7 is in 1..=255.
    let exponent = 7 - ((magnitude >> 7) as u8).leading_zeros() as i32;
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

const fn mulaw_decode_formula(byte: u8) -> i16 {
    let u = !byte;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_decode_formula(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    if seg == 0 {
        t += 8;
    } else if seg == 1 {
        t += 0x108;
    } else {
        t = (t + 0x108) << (seg - 1);
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

macro_rules! decode_table {
    ($formula:ident) => {{
        let mut out = [0i16; 256];
        let mut i = 0;
        while i < 256 {
            out[i] = $formula(i as u8);
            i += 1;
        }
        out
    }};
}

static MULAW_DECODE: [i16; 256] = decode_table!(mulaw_decode_formula);
static ALAW_DECODE: [i16; 256] = decode_table!(alaw_decode_formula);

/// Decodes one μ-law byte to a 16-bit linear sample.
#[inline]
pub fn mulaw_decode(byte: u8) -> i16 {
    MULAW_DECODE[byte as usize]
}

/// Encodes one 16-bit linear sample as A-law.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut v = (sample as i32) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    match SEG_END.iter().position(|&end| v <= end) {
        None => 0x7F ^ mask,
        Some(seg) => {
            let shifted = if seg < 2 { v >> 1 } else { v >> seg };
            (((seg as i32) << 4) as u8 | (shifted & 0x0F) as u8) ^ mask
        }
    }
}

/// Decodes one A-law byte to a 16-bit linear sample.
#[inline]
pub fn alaw_decode(byte: u8) -> i16 {
    ALAW_DECODE[byte as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn published_vectors() {
        // PROTOCOLS.md §9.3.
        let mulaw = [
            (0, 0xFF, 0),
            (1, 0xFF, 0),
            (7, 0xFE, 8),
            (-8, 0x7E, -8),
            (100, 0xF2, 104),
            (-1000, 0x4E, -988),
            (8159, 0x9F, 8316),
            (32767, 0x80, 32124),
            (-32768, 0x00, -32124),
        ];
        for (pcm, byte, back) in mulaw {
            assert_eq!(mulaw_encode(pcm), byte, "mulaw encode {pcm}");
            assert_eq!(mulaw_decode(byte), back, "mulaw decode {byte:#x}");
        }
        let alaw = [
            (0, 0xD5, 8),
            (-1, 0x55, -8),
            (16, 0xD4, 24),
            (1000, 0xFA, 1008),
            (-4096, 0x1A, -4032),
            (32767, 0xAA, 32256),
            (-32768, 0x2A, -32256),
        ];
        for (pcm, byte, back) in alaw {
            assert_eq!(alaw_encode(pcm), byte, "alaw encode {pcm}");
            assert_eq!(alaw_decode(byte), back, "alaw decode {byte:#x}");
        }
    }

    #[test]
    fn round_trips_every_code() {
        for b in 0..=255u8 {
            let expected = if b == 0x7F { 0xFF } else { b };
            assert_eq!(mulaw_encode(mulaw_decode(b)), expected, "mulaw {b:#x}");
            assert_eq!(alaw_encode(alaw_decode(b)), b, "alaw {b:#x}");
        }
    }

    proptest! {
        #[test]
        fn mulaw_error_is_bounded(s in any::<i16>()) {
            let back = mulaw_decode(mulaw_encode(s)) as i32;
            let s = (s as i32).clamp(-32124, 32124);
            // Quantisation step at the top segment is 1024; the error is at most half of it
            // plus the clip region.
            prop_assert!((back - s).abs() <= 1024, "{} -> {}", s, back);
            prop_assert_eq!(back.signum() * s.signum() >= 0, true);
        }

        #[test]
        fn alaw_error_is_bounded(s in any::<i16>()) {
            let back = alaw_decode(alaw_encode(s)) as i32;
            prop_assert!((back - s as i32).abs() <= 1024, "{} -> {}", s, back);
        }
    }
}
