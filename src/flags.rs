//! Value parsers and names shared by the flag groups (`options`, `unlabeled`).

/// A number flag's parser: finite numbers only (`nan` and `inf` are no setting, and would not
/// survive the JSON that `compare` saves).
pub fn finite<T>(s: &str) -> std::result::Result<T, String>
where
    T: std::str::FromStr + Into<f64> + Copy,
{
    let x: T = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if x.into().is_finite() {
        Ok(x)
    } else {
        Err(format!("{s:?} is not a finite number"))
    }
}
