//! PostgreSQL's binary `numeric` (base-10000 digits with a weight, a sign and a display scale),
//! read the same way by both drivers: the display scale is kept (`0.00` stays `0.00`, `1e100`
//! reads as its 101 digits, as PostgreSQL prints them), and NaN and the infinities, which no
//! decimal holds, are an error that says so.

use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::BigInt;

pub(crate) const NUMERIC_POS: u16 = 0x0000;
pub(crate) const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// A `numeric` from its binary form.
pub(crate) fn decode(raw: &[u8]) -> Result<BigDecimal, String> {
    let field = |at: usize| -> Result<u16, String> {
        raw.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".to_owned())
    };
    let count = usize::from(field(0)?);
    let weight = i64::from(field(2)? as i16);
    let sign = field(4)?;
    let dscale = i64::from(field(6)?);
    let special = match sign {
        NUMERIC_POS | NUMERIC_NEG => None,
        NUMERIC_NAN => Some("NaN"),
        NUMERIC_PINF => Some("Infinity"),
        NUMERIC_NINF => Some("-Infinity"),
        _ => Some("of an unknown kind"),
    };
    if let Some(special) = special {
        return Err(format!(
            "numeric {special} has no decimal value; cast it in SQL (e.g. `::text` or `::float8`)"
        ));
    }
    let mut int = BigInt::from(0u8);
    for i in 0..count {
        int = int * 10_000u32 + BigInt::from(field(8 + 2 * i)?);
    }
    if sign == NUMERIC_NEG {
        int = -int;
    }
    // The digits are `int × 10000^(weight - count + 1)`.
    let count = i64::try_from(count).map_err(|_| "numeric too long".to_owned())?;
    let exponent = 4 * (weight - count + 1);
    Ok(BigDecimal::new(int, -exponent).with_scale(dscale))
}
