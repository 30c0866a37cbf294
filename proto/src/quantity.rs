//! Kubernetes resource quantities: `"100m"`, `"0.5"`, `"128Mi"`, `"1G"`, `"1e3"`.
//!
//! A [`Quantity`] holds an exact amount in milli-units (thousandths of the base
//! unit: millicores for CPU, millibytes for memory) together with the
//! [`Format`] it was written in, which only decides how it is printed back.
//! Arithmetic and comparisons use the amount alone, so `"1Gi"`, `"1024Mi"`
//! and `"1073741824"` are all equal.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Add, Neg, Sub};
use std::str::FromStr;

/// The forms a quantity string may take, quoted in every parse error.
const ACCEPTED_FORMS: &str = "expected a number with an optional sign, decimal point and suffix: \
     m, k, M, G, T, P, E (powers of 1000), Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024) or an \
     exponent such as e3 or E-3; for example '100m', '0.5', '2', '128Mi', '1.5Gi', '1G' or '1e3'";

/// How a [`Quantity`] is printed; remembered from the suffix it was parsed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Powers of 1024: `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei` (e.g. `"128Mi"`).
    BinarySI,
    /// Powers of 1000: `m`, (none), `k`, `M`, `G`, `T`, `P`, `E` (e.g. `"100m"`, `"1G"`).
    #[default]
    DecimalSI,
    /// Powers of ten written as an exponent that is a multiple of 3 (e.g. `"1e3"`).
    DecimalExponent,
}

/// An error parsing a [`Quantity`]; the message quotes the input and the
/// accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string was empty.
    #[error("invalid quantity: the value is empty; {ACCEPTED_FORMS}")]
    Empty,
    /// The string is not a number followed by a known suffix.
    #[error("invalid quantity {input:?}: {reason}; {ACCEPTED_FORMS}")]
    Malformed {
        /// The string that was parsed.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value has a non-zero digit below a thousandth of the unit.
    #[error(
        "invalid quantity {input:?}: too precise: quantities have at most millicore (m) \
         precision; round it to a multiple of 0.001 (1m)"
    )]
    TooPrecise {
        /// The string that was parsed.
        input: String,
    },
    /// The value does not fit (in milli-units, an `i128`).
    #[error(
        "invalid quantity {input:?}: too large: the magnitude must stay below about 1.7e35 \
         units; use a smaller value"
    )]
    TooLarge {
        /// The string that was parsed.
        input: String,
    },
}

/// An exact resource amount, such as CPU (`"250m"`) or memory (`"512Mi"`).
///
/// Equality, ordering and hashing compare the amount only; the [`Format`]
/// matters only for [`Display`](fmt::Display), which prints the canonical
/// form Kubernetes would print: `"1.5"` → `"1500m"`, `"1.5Gi"` → `"1536Mi"`,
/// `"1000"` → `"1k"`, `"0"` → `"0"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantity {
    millis: i128,
    format: Format,
}

impl Quantity {
    /// A quantity of `millis` thousandths of the unit, printed in `format`.
    pub fn from_millis(millis: i128, format: Format) -> Self {
        Quantity { millis, format }
    }

    /// The exact amount in thousandths of the unit (`"1.5"` → 1500).
    pub fn millis(&self) -> i128 {
        self.millis
    }

    /// The amount in whole units, rounded away from zero like Kubernetes'
    /// `Quantity.Value()`: `"100m"` → 1, `"1"` → 1, `"-1500m"` → -2.
    pub fn value(&self) -> i128 {
        let whole = self.millis / 1000;
        match self.millis % 1000 {
            0 => whole,
            r if r > 0 => whole + 1,
            _ => whole - 1,
        }
    }

    /// The format used when printing.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the amount is below zero (Kubernetes accepts negative
    /// quantities in general; resource requests and limits must not be).
    pub fn is_negative(&self) -> bool {
        self.millis < 0
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.millis == 0
    }

    /// `self + other`, or `None` on overflow. The result keeps `self`'s
    /// format unless `self` is zero, in which case it takes `other`'s.
    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        Some(Quantity {
            millis: self.millis.checked_add(other.millis)?,
            format: self.combined_format(other),
        })
    }

    /// `self - other`, or `None` on overflow; formats as in
    /// [`checked_add`](Self::checked_add).
    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        Some(Quantity {
            millis: self.millis.checked_sub(other.millis)?,
            format: self.combined_format(other),
        })
    }

    fn combined_format(self, other: Quantity) -> Format {
        if self.millis == 0 {
            other.format
        } else {
            self.format
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.millis == other.millis
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.millis.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.millis.cmp(&other.millis)
    }
}

impl Add for Quantity {
    type Output = Quantity;

    /// Panics on overflow; see [`Quantity::checked_add`].
    fn add(self, other: Quantity) -> Quantity {
        self.checked_add(other)
            .expect("quantity addition overflowed; use checked_add")
    }
}

impl Sub for Quantity {
    type Output = Quantity;

    /// Panics on overflow; see [`Quantity::checked_sub`].
    fn sub(self, other: Quantity) -> Quantity {
        self.checked_sub(other)
            .expect("quantity subtraction overflowed; use checked_sub")
    }
}

impl Neg for Quantity {
    type Output = Quantity;

    /// Panics only for the most negative representable amount.
    fn neg(self) -> Quantity {
        Quantity {
            millis: -self.millis,
            format: self.format,
        }
    }
}

/// The scale a suffix applies: value × 10^`pow10` × 2^`pow2`.
struct Scale {
    pow10: i64,
    pow2: u32,
    format: Format,
}

fn parse_suffix(suffix: &str) -> Option<Scale> {
    let decimal = |pow10| Scale {
        pow10,
        pow2: 0,
        format: Format::DecimalSI,
    };
    let binary = |pow2| Scale {
        pow10: 0,
        pow2,
        format: Format::BinarySI,
    };
    Some(match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Absurd exponents saturate; they end up as "too large"/"too precise".
            let pow10 = exp.parse::<i64>().unwrap_or(if exp.starts_with('-') {
                i64::MIN / 2
            } else {
                i64::MAX / 2
            });
            Scale {
                pow10: pow10.clamp(-1_000_000, 1_000_000),
                pow2: 0,
                format: Format::DecimalExponent,
            }
        }
    })
}

impl FromStr for Quantity {
    type Err = QuantityError;

    /// Parses `[+-]digits[.digits][suffix]`; see [`Format`] for the suffixes.
    /// `"n"` and `"u"` (nano, micro) are accepted when the amount is still a
    /// whole number of milli-units (`"500000u"` = `"500m"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = |reason: &str| QuantityError::Malformed {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        if s.chars().any(char::is_whitespace) {
            return Err(malformed("it contains whitespace"));
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = rest.split_at(int_len);
        let (frac_part, suffix) = match rest.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(malformed("it does not start with a number"));
        }
        let scale =
            parse_suffix(suffix).ok_or_else(|| malformed(&format!("unknown suffix {suffix:?}")))?;

        // Mantissa digits without leading zeros or trailing fractional zeros.
        let frac_part = frac_part.trim_end_matches('0');
        let digits: String = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Ok(Quantity::from_millis(0, scale.format));
        }
        let too_large = || QuantityError::TooLarge {
            input: s.to_string(),
        };
        let too_precise = || QuantityError::TooPrecise {
            input: s.to_string(),
        };

        // value = mantissa × 10^(pow10 - frac_len) × 2^pow2; millis = value × 1000.
        let trailing_zeros = digits.len() - digits.trim_end_matches('0').len();
        let digits = digits.trim_end_matches('0');
        let mut pow10 = scale.pow10 - frac_part.len() as i64 + 3 + trailing_zeros as i64;
        if digits.len() > 39 {
            // A 40-digit mantissa without trailing zeros never fits an i128 amount.
            return Err(if pow10 + digits.len() as i64 > 0 {
                too_large()
            } else {
                too_precise()
            });
        }
        let mantissa: i128 = digits.parse().map_err(|_| too_large())?;
        let mut millis = mantissa
            .checked_mul(1i128.checked_shl(scale.pow2).ok_or_else(too_large)?)
            .ok_or_else(too_large)?;
        while pow10 > 0 {
            millis = millis.checked_mul(10).ok_or_else(too_large)?;
            pow10 -= 1;
        }
        while pow10 < 0 {
            if millis % 10 != 0 {
                return Err(too_precise());
            }
            millis /= 10;
            pow10 += 1;
        }
        Ok(Quantity::from_millis(
            if negative { -millis } else { millis },
            scale.format,
        ))
    }
}

const DECIMAL_SUFFIXES: [&str; 8] = ["m", "", "k", "M", "G", "T", "P", "E"];
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

impl fmt::Display for Quantity {
    /// Prints the canonical form: the largest suffix of the quantity's format
    /// that leaves a whole number. Binary quantities below 1Ki in magnitude
    /// or with a fractional part print as decimal (`"0.5Ki"` → `"512"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0");
        }
        let sign = if self.millis < 0 { "-" } else { "" };
        let abs = self.millis.unsigned_abs();
        let binary_ok = abs >= 1024 * 1000 && abs.is_multiple_of(1000);
        match self.format {
            Format::BinarySI if binary_ok => {
                let mut v = abs / 1000;
                let mut i = 0;
                while i + 1 < BINARY_SUFFIXES.len() && v.is_multiple_of(1024) {
                    v /= 1024;
                    i += 1;
                }
                write!(f, "{sign}{v}{}", BINARY_SUFFIXES[i])
            }
            Format::BinarySI | Format::DecimalSI => {
                let mut v = abs;
                let mut i = 0;
                while i + 1 < DECIMAL_SUFFIXES.len() && v.is_multiple_of(1000) {
                    v /= 1000;
                    i += 1;
                }
                write!(f, "{sign}{v}{}", DECIMAL_SUFFIXES[i])
            }
            Format::DecimalExponent => {
                let mut v = abs;
                let mut exp: i32 = -3;
                while v.is_multiple_of(1000) {
                    v /= 1000;
                    exp += 3;
                }
                if exp == 0 {
                    write!(f, "{sign}{v}")
                } else {
                    write!(f, "{sign}{v}e{exp}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    fn parse_and_canonical_print() {
        // (input, millis, format, canonical)
        use Format::*;
        let cases: &[(&str, i128, Format, &str)] = &[
            ("0", 0, DecimalSI, "0"),
            ("0Gi", 0, BinarySI, "0"),
            ("0.000", 0, DecimalSI, "0"),
            ("-0", 0, DecimalSI, "0"),
            ("100m", 100, DecimalSI, "100m"),
            ("0.1", 100, DecimalSI, "100m"),
            (".1", 100, DecimalSI, "100m"),
            ("0.5", 500, DecimalSI, "500m"),
            ("1", 1000, DecimalSI, "1"),
            ("1.", 1000, DecimalSI, "1"),
            ("+1", 1000, DecimalSI, "1"),
            ("2", 2000, DecimalSI, "2"),
            ("1.5", 1500, DecimalSI, "1500m"),
            ("1500m", 1500, DecimalSI, "1500m"),
            ("1000m", 1000, DecimalSI, "1"),
            ("0.001", 1, DecimalSI, "1m"),
            ("1m", 1, DecimalSI, "1m"),
            ("007", 7000, DecimalSI, "7"),
            ("1000", 1_000_000, DecimalSI, "1k"),
            ("1500", 1_500_000, DecimalSI, "1500"),
            ("1k", 1_000_000, DecimalSI, "1k"),
            ("1.5k", 1_500_000, DecimalSI, "1500"),
            ("1G", 1_000_000_000_000, DecimalSI, "1G"),
            ("1000M", 1_000_000_000_000, DecimalSI, "1G"),
            ("1500M", 1_500_000_000_000, DecimalSI, "1500M"),
            ("1T", 1_000_000_000_000_000, DecimalSI, "1T"),
            ("1P", 10i128.pow(18), DecimalSI, "1P"),
            ("1E", 10i128.pow(21), DecimalSI, "1E"),
            ("1000E", 10i128.pow(24), DecimalSI, "1000E"),
            ("128Mi", 128 * (1 << 20) * 1000, BinarySI, "128Mi"),
            ("1Gi", (1 << 30) * 1000, BinarySI, "1Gi"),
            ("1024Mi", (1 << 30) * 1000, BinarySI, "1Gi"),
            ("1.5Gi", 1536 * (1 << 20) * 1000, BinarySI, "1536Mi"),
            ("1000Ki", 1_024_000 * 1000, BinarySI, "1000Ki"),
            ("1Ki", 1024 * 1000, BinarySI, "1Ki"),
            ("0.5Ki", 512 * 1000, BinarySI, "512"),
            ("1.5Ki", 1536 * 1000, BinarySI, "1536"),
            ("0.0005Ki", 512, BinarySI, "512m"),
            ("1Ti", (1i128 << 40) * 1000, BinarySI, "1Ti"),
            ("1Pi", (1i128 << 50) * 1000, BinarySI, "1Pi"),
            ("1Ei", (1i128 << 60) * 1000, BinarySI, "1Ei"),
            ("2048Ei", (1i128 << 71) * 1000, BinarySI, "2048Ei"),
            ("-1Gi", -(1 << 30) * 1000, BinarySI, "-1Gi"),
            ("-0.5Ki", -512 * 1000, BinarySI, "-512"),
            ("-100m", -100, DecimalSI, "-100m"),
            ("-1.5", -1500, DecimalSI, "-1500m"),
            ("1e3", 1_000_000, DecimalExponent, "1e3"),
            ("1E3", 1_000_000, DecimalExponent, "1e3"),
            ("1e+3", 1_000_000, DecimalExponent, "1e3"),
            ("1e0", 1000, DecimalExponent, "1"),
            ("12e6", 12_000_000_000, DecimalExponent, "12e6"),
            ("1000e3", 1_000_000_000, DecimalExponent, "1e6"),
            ("1e-3", 1, DecimalExponent, "1e-3"),
            ("1.5e0", 1500, DecimalExponent, "1500e-3"),
            ("15e-1", 1500, DecimalExponent, "1500e-3"),
            ("1e2", 100_000, DecimalExponent, "100"),
            ("0e-99", 0, DecimalExponent, "0"),
            ("500000u", 500, DecimalSI, "500m"),
            ("1000000n", 1, DecimalSI, "1m"),
        ];
        for &(input, millis, format, canonical) in cases {
            let got = q(input);
            assert_eq!(got.millis(), millis, "millis of {input:?}");
            assert_eq!(got.format(), format, "format of {input:?}");
            assert_eq!(got.to_string(), canonical, "canonical form of {input:?}");
            // The canonical form parses back to the same amount and prints the same.
            let again = q(canonical);
            assert_eq!(again, got, "re-parse of {canonical:?}");
            assert_eq!(again.to_string(), canonical, "re-print of {canonical:?}");
        }
    }

    #[test]
    fn from_millis_prints_canonically() {
        use Format::*;
        assert_eq!(Quantity::from_millis(0, BinarySI).to_string(), "0");
        assert_eq!(Quantity::from_millis(500, BinarySI).to_string(), "500m");
        assert_eq!(
            Quantity::from_millis(1_023_000, BinarySI).to_string(),
            "1023"
        );
        assert_eq!(
            Quantity::from_millis(1_024_000, BinarySI).to_string(),
            "1Ki"
        );
        assert_eq!(
            Quantity::from_millis(1_024_500, BinarySI).to_string(),
            "1024500m"
        );
        assert_eq!(
            Quantity::from_millis(2_000_000, DecimalSI).to_string(),
            "2k"
        );
        assert_eq!(Quantity::from_millis(250, DecimalSI).to_string(), "250m");
        assert_eq!(
            Quantity::from_millis(2_000_000, DecimalExponent).to_string(),
            "2e3"
        );
        assert_eq!(
            Quantity::from_millis(i128::MIN, DecimalSI).millis(),
            i128::MIN
        );
        assert!(
            !Quantity::from_millis(i128::MIN, BinarySI)
                .to_string()
                .is_empty()
        );
    }

    #[test]
    fn value_rounds_away_from_zero() {
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("1").value(), 1);
        assert_eq!(q("1001m").value(), 2);
        assert_eq!(q("1.5Gi").value(), 1536 << 20);
        assert_eq!(q("0").value(), 0);
        assert_eq!(q("-100m").value(), -1);
        assert_eq!(q("-1500m").value(), -2);
        assert_eq!(q("-2").value(), -2);
    }

    #[test]
    fn negative_values() {
        assert!(q("-1").is_negative());
        assert!(!q("1").is_negative());
        assert!(!q("0").is_negative());
        assert!(!q("-0").is_negative());
        assert!(q("0").is_zero());
    }

    #[test]
    fn equality_and_ordering_ignore_format() {
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1k"), q("1e3"));
        assert_eq!(q("1000m"), q("1"));
        assert_ne!(q("1G"), q("1Gi"));
        assert!(q("1G") < q("1Gi"));
        assert!(q("999m") < q("1"));
        assert!(q("-1") < q("0"));
        assert!(q("1Ki") > q("1k"));
        let mut v: Vec<Quantity> = ["1Gi", "100m", "-2", "1G", "0", "1", "512Mi"]
            .iter()
            .map(|s| q(s))
            .collect();
        v.sort();
        let printed: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        assert_eq!(printed, ["-2", "0", "100m", "1", "512Mi", "1G", "1Gi"]);

        use std::collections::HashSet;
        let set: HashSet<Quantity> = [q("1Gi"), q("1024Mi")].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn arithmetic() {
        assert_eq!(q("1") + q("500m"), q("1500m"));
        assert_eq!((q("1") + q("500m")).to_string(), "1500m");
        assert_eq!((q("1Gi") + q("512Mi")).to_string(), "1536Mi");
        assert_eq!((q("1Gi") - q("1Gi")).to_string(), "0");
        assert_eq!((q("100m") - q("200m")).to_string(), "-100m");
        // Zero takes the other operand's format.
        assert_eq!((q("0") + q("1Gi")).format(), Format::BinarySI);
        assert_eq!((q("1k") + q("1Ki")).format(), Format::DecimalSI);
        assert_eq!((-q("1Gi")).to_string(), "-1Gi");
        let max = Quantity::from_millis(i128::MAX, Format::DecimalSI);
        assert_eq!(max.checked_add(q("1m")), None);
        assert_eq!(
            Quantity::from_millis(i128::MIN, Format::DecimalSI).checked_sub(q("1m")),
            None
        );
        assert_eq!(
            max.checked_sub(q("1m")).map(|x| x.millis()),
            Some(i128::MAX - 1)
        );
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            "", " ", " 1", "1 ", "1 Gi", "1\t", "1KB", "1K", "1mi", "1gi", "1Kib", "1i", ".5i",
            "1.1.1", "1..", "1+1", "++1", "-+1", "--1", "+", "-", ".", "m", "Gi", "e3", "1e",
            "1e+", "1e3e3", "1e3.5", "1e3Gi", "1Gie3", "abc", "0x10", "1,5", "1_000", "１",
        ];
        for s in cases {
            let err = s.parse::<Quantity>().expect_err(s);
            let msg = err.to_string();
            assert!(msg.contains("for example '100m'"), "{s:?}: {msg}");
            if !s.is_empty() {
                assert!(msg.contains(&format!("{s:?}")), "{s:?}: {msg}");
            }
        }
        let msg = "1KB".parse::<Quantity>().unwrap_err().to_string();
        assert!(msg.contains("unknown suffix \"KB\""), "{msg}");
        assert_eq!("".parse::<Quantity>(), Err(QuantityError::Empty));
    }

    #[test]
    fn rejects_too_precise() {
        for s in [
            "0.0001",
            "1.0005",
            "1n",
            "1u",
            "999u",
            "0.5m",
            "1e-4",
            "1.0000001k",
            "0.0001Ki",
        ] {
            let err = s.parse::<Quantity>().expect_err(s);
            assert_eq!(
                err,
                QuantityError::TooPrecise {
                    input: s.to_string()
                },
                "{s}"
            );
            assert!(
                err.to_string()
                    .contains("too precise: quantities have at most millicore (m) precision"),
                "{err}"
            );
        }
        // Trailing zeros beyond milli precision are fine.
        assert_eq!(q("0.0010000").millis(), 1);
        assert_eq!(q("1.5000000").millis(), 1500);
        assert_eq!(q("0.001000Ki").millis(), 1024);
    }

    #[test]
    fn rejects_too_large() {
        let big = format!("1{}", "0".repeat(40));
        for s in [
            big.as_str(),
            "1e100",
            "1e99999999999999999999999",
            "200000000000000000E",
        ] {
            let err = s.parse::<Quantity>().expect_err(s);
            assert_eq!(
                err,
                QuantityError::TooLarge {
                    input: s.to_string()
                },
                "{s}"
            );
        }
        assert_eq!(
            "1e-99999999999999999999999".parse::<Quantity>(),
            Err(QuantityError::TooPrecise {
                input: "1e-99999999999999999999999".into()
            })
        );
        // Many digits are fine as long as the amount fits.
        let long = format!("0.{}1e{}", "0".repeat(50), 51);
        assert_eq!(q(&long).millis(), 1000);
        assert_eq!(q(&format!("{}1", "0".repeat(60))).millis(), 1000);
        assert_eq!(q("100000000000000000E").millis(), 10i128.pow(38));
    }
}
