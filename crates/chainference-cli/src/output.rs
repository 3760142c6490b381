//! Shared terminal output: amounts, the model-loading progress bar.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chainference_server::candle::{CandleBackend, ModelSource};

/// `1234567` as `1,234,567`.
pub fn lamports(amount: u64) -> String {
    let digits = amount.to_string();
    let mut out = String::with_capacity(digits.len().saturating_add(digits.len() / 3));
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len().saturating_sub(i)) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Loads the GGUF (the one `cargo xtask setup` installed unless `path` says otherwise) behind
/// a progress spinner on stderr.
pub fn load_model(path: Option<PathBuf>) -> Result<CandleBackend> {
    let source = path.map_or_else(ModelSource::default_model, ModelSource::Path);
    let shown = match &source {
        ModelSource::Path(path) => path.clone(),
        _ => PathBuf::from("the model"),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("loading {}", shown.display()));
    bar.enable_steady_tick(Duration::from_millis(80));
    let started = Instant::now();
    let loaded = CandleBackend::load(&source)
        .with_context(|| format!("loading the model from {} (run `cargo xtask setup` to fetch it)", shown.display()));
    bar.finish_and_clear();
    let model = loaded?;
    eprintln!("model loaded from {} in {:.1} s", shown.display(), started.elapsed().as_secs_f64());
    Ok(model)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lamports_are_grouped() {
        assert_eq!(super::lamports(0), "0");
        assert_eq!(super::lamports(999), "999");
        assert_eq!(super::lamports(1_000), "1,000");
        assert_eq!(super::lamports(6_257_040), "6,257,040");
    }
}
