//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`), exactly: the value is held in
//! nano-units as an i128 (enough for exbibytes), with the notation (binary or decimal)
//! the quantity was written in, and printed in upstream's canonical form (`1000` is
//! `1k`, `1536Mi` stays `1536Mi`, `0.5` is `500m`).

use std::cmp::Ordering;
use std::fmt;

const NANO: i128 = 1_000_000_000;

#[derive(Clone, Copy, Debug, Default)]
pub struct Quantity {
    /// The value in units of 10⁻⁹.
    nanos: i128,
    binary: bool,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Quantity {
    pub const ZERO: Quantity = Quantity { nanos: 0, binary: false };

    /// A whole number of units (a count).
    pub fn count(n: i64) -> Quantity {
        Quantity { nanos: n as i128 * NANO, binary: false }
    }

    pub fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        let (negative, digits) = match number.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, number.strip_prefix('+').unwrap_or(number)),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && frac.is_empty() || !(whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())) {
            return None;
        }
        // the mantissa as an integer and a power of ten
        let mantissa: i128 = format!("{whole}{frac}").trim_start_matches('0').parse().unwrap_or(0);
        let mut exp10 = -(frac.len() as i32);
        let (mut mult, binary) = (1i128, suffix.ends_with('i'));
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => mult = 1 << 10,
            "Mi" => mult = 1 << 20,
            "Gi" => mult = 1 << 30,
            "Ti" => mult = 1 << 40,
            "Pi" => mult = 1 << 50,
            "Ei" => mult = 1 << 60,
            e if e.starts_with(['e', 'E']) => exp10 += e[1..].parse::<i32>().ok().filter(|x| x.abs() <= 30)?,
            _ => return None,
        }
        // to nano-units, rounding any finer fraction up, as upstream does
        let mut nanos = mantissa.checked_mul(mult)?;
        let shift = exp10 + 9;
        if shift >= 0 {
            nanos = nanos.checked_mul(10i128.checked_pow(shift as u32)?)?;
        } else {
            let div = 10i128.checked_pow((-shift) as u32)?;
            nanos = (nanos + div - 1) / div;
        }
        Some(Quantity { nanos: if negative { -nanos } else { nanos }, binary })
    }

    /// A quantity in a JSON value (a string, or a bare number).
    pub fn of(v: &serde_json::Value) -> Option<Quantity> {
        match v {
            serde_json::Value::String(s) => Quantity::parse(s),
            serde_json::Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => None,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The sum, in the notation of the left side (upstream's Add).
    pub fn add(self, other: Quantity) -> Quantity {
        let binary = if self.nanos == 0 { other.binary } else { self.binary };
        Quantity { nanos: self.nanos + other.nanos, binary }
    }

    /// limit ÷ request as a float, for the ratio message.
    pub fn ratio(self, over: Quantity) -> f64 {
        self.nanos as f64 / over.nanos as f64
    }

    pub fn max(self, other: Quantity) -> Quantity {
        if other.nanos > self.nanos { other } else { self }
    }

    /// The value in thousandths, rounded up (upstream's MilliValue), saturating at i64.
    pub fn milli_value(&self) -> i64 {
        Self::saturate(ceil_div(self.nanos, 1_000_000))
    }

    /// The value in whole units, rounded up (upstream's Value), saturating at i64.
    pub fn value(&self) -> i64 {
        Self::saturate(ceil_div(self.nanos, NANO))
    }

    fn saturate(v: i128) -> i64 {
        v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

fn ceil_div(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d > 0 { q + 1 } else { q }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let n = self.nanos;
        if n == 0 {
            return f.write_str("0");
        }
        if self.binary && n % NANO == 0 {
            let units = n / NANO;
            for (shift, suffix) in [(60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
                if units.abs() >= 1 << shift && units % (1i128 << shift) == 0 {
                    return write!(f, "{}{suffix}", units >> shift);
                }
            }
            // below 1Ki or not a multiple: plain units, as upstream prints them
            if units.abs() < 1024 {
                return write!(f, "{units}");
            }
        }
        for (exp, suffix) in
            [(27, "E"), (24, "P"), (21, "T"), (18, "G"), (15, "M"), (12, "k"), (9, ""), (6, "m"), (3, "u"), (0, "n")]
        {
            let div = 10i128.pow(exp);
            if n % div == 0 {
                return write!(f, "{}{suffix}", n / div);
            }
        }
        write!(f, "{n}n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn parses_and_compares_exactly() {
        assert_eq!(q("500m"), q("0.5"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("1k"), q("1000"));
        assert_eq!(q("2e3"), q("2k"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert!(q("1") > q("999m"));
        assert!(q("128974849") > q("123Mi"));
        assert_eq!(q("128974848"), q("123Mi"));
        assert!(q("100n") < q("1u"));
        assert_eq!(q("-1").add(q("1")), Quantity::ZERO);
        for bad in ["", "abc", "1.2.3", "5x", "1Qi", "--1", "."] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn prints_canonically() {
        for (input, out) in [
            ("500m", "500m"),
            ("1", "1"),
            ("1000", "1k"),
            ("1500m", "1500m"),
            ("0.5", "500m"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("100Mi", "100Mi"),
            ("512", "512"),
            ("2e3", "2k"),
            ("0", "0"),
            ("1n", "1n"),
        ] {
            assert_eq!(q(input).to_string(), out, "{input}");
        }
        assert_eq!(q("1").add(q("500m")).to_string(), "1500m");
        assert_eq!(q("100Mi").add(q("100Mi")).to_string(), "200Mi");
        assert_eq!(Quantity::count(3).to_string(), "3");
    }

    #[test]
    fn milli_and_whole_values_round_up() {
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("100m").value(), 1);
        assert_eq!(q("-1").value(), -1);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("12E").value(), 12_000_000_000_000_000_000i128.min(i64::MAX as i128) as i64);
    }
}
