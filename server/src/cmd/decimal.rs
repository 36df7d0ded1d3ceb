//! Exact decimal sums for INCRBYFLOAT and HINCRBYFLOAT.
//!
//! Redis adds in a long double and prints the sum with 17 decimals, trailing zeros cut
//! (`%.17Lf`, "human friendly"). An f64 cannot match that for, say,
//! `12345678901234.56 + 0.01`; plain decimals added exactly in fixed point and rounded to
//! 17 decimals give Redis's text. Anything else (exponents, more digits) goes through
//! f64 in the callers.

/// One unit of the fixed point: 1e-18, one digit finer than the 1e-17 Redis prints, so a
/// sum of two operands with 18 decimals rounds once, as Redis's does.
const SCALE: i128 = 1_000_000_000_000_000_000;
/// Digits after the point a parsed decimal may have.
const MAX_DECIMALS: usize = 18;
/// Digits before the point a parsed decimal may have (so that it fits an i128).
const MAX_INTEGER_DIGITS: usize = 20;

/// A plain decimal (`-12.5`, `.5`, `3.`; no exponent) with at most 20 integer digits
/// and 18 decimals, in units of 1e-18.
pub fn parse_decimal(s: &[u8]) -> Option<i128> {
    let (negative, rest) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], &rest[dot + 1..]),
        None => (rest, &[][..]),
    };
    if (int.is_empty() && frac.is_empty())
        || int.len() > MAX_INTEGER_DIGITS
        || frac.len() > MAX_DECIMALS
        || !int.iter().chain(frac).all(u8::is_ascii_digit)
    {
        return None;
    }
    let digit = |d: &u8| i128::from(d - b'0');
    let mut v = int.iter().fold(0i128, |v, d| v * 10 + digit(d));
    for i in 0..MAX_DECIMALS {
        v = v * 10 + frac.get(i).map_or(0, digit);
    }
    Some(if negative { -v } else { v })
}

/// The text of a [`parse_decimal`] value as Redis prints a human-friendly long double:
/// rounded (half to even) to 17 decimals, trailing zeros cut, never `-0`.
pub fn format_decimal(v: i128) -> String {
    let abs = v.unsigned_abs();
    let (mut units, rest) = (abs / 10, abs % 10);
    if rest > 5 || (rest == 5 && units % 2 == 1) {
        units += 1;
    }
    let scale = (SCALE / 10) as u128;
    let mut text = String::new();
    if v < 0 && units != 0 {
        text.push('-');
    }
    text.push_str(&(units / scale).to_string());
    let frac = units % scale;
    if frac != 0 {
        let digits = format!("{frac:017}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_decimals() {
        let add = |a: &str, b: &str| {
            let sum = parse_decimal(a.as_bytes()).unwrap() + parse_decimal(b.as_bytes()).unwrap();
            format_decimal(sum)
        };
        assert_eq!(add("0.1", "0.2"), "0.3");
        assert_eq!(add("-9223372036854775793", "1.5"), "-9223372036854775791.5");
        assert_eq!(add("12345678901234.56", "0.01"), "12345678901234.57");
        assert_eq!(add("1.5", "-1.5"), "0");
        assert_eq!(add("-0.5", "0.25"), "-0.25");
        assert_eq!(add(".5", "3."), "3.5");
        assert_eq!(add("+1", "0.00000000000000001"), "1.00000000000000001");
        // Redis's "No negative zero" test: 1/41 then -1/41 as Tcl prints them.
        let once = add("0", "0.024390243902439025");
        assert_eq!(once, "0.02439024390243902");
        assert_eq!(add(&once, "-0.024390243902439025"), "0");
        for bad in [
            "",
            ".",
            "-",
            "1e3",
            "1.5.5",
            " 1",
            "0.1234567890123456789",
            "inf",
        ] {
            assert_eq!(parse_decimal(bad.as_bytes()), None, "{bad}");
        }
        assert!(parse_decimal(b"99999999999999999999.999999999999999999").is_some());
        assert!(parse_decimal(b"999999999999999999999").is_none());
    }
}
