//! How the inference timesteps are picked out of the training timesteps (`timestep_spacing`), with numpy's
//! arithmetic: float64 `linspace`/`arange`, rounding half to even.

use crate::error::{Error, Result};
use std::path::Path;

/// `timestep_spacing` of a scheduler config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    /// `T//n · i + steps_offset` (DDIM/PNDM default; SD1.x, SDXL).
    Leading,
    /// Evenly from `T-1` down, ending near 0 (Lightning, Turbo).
    Trailing,
    /// `linspace(0, T-1, n)` (Euler default).
    Linspace,
}

impl Spacing {
    pub fn parse(given: Option<&str>, default: Spacing, path: &Path) -> Result<Self> {
        match given {
            None => Ok(default),
            Some("leading") => Ok(Spacing::Leading),
            Some("trailing") => Ok(Spacing::Trailing),
            Some("linspace") => Ok(Spacing::Linspace),
            Some(other) => Err(Error::Unsupported {
                path: path.into(),
                why: format!("timestep_spacing `{other}` (known: leading, trailing, linspace)"),
            }),
        }
    }
}

/// `np.linspace(start, stop, n)` in float64.
pub fn np_linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut out: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    out[n - 1] = stop;
    out
}

/// `np.arange(start, stop, step)` in float64 (numpy fills `start + i·(x₁ - x₀)`).
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| if i == 0 { start } else { start + i as f64 * delta }).collect()
}

/// Check the number of inference steps against the training schedule.
pub fn check_steps(steps: usize, num_train_timesteps: i64) -> Result<()> {
    if steps == 0 || steps as i64 > num_train_timesteps {
        return Err(Error::invalid(
            format!("{steps} inference steps"),
            format!("choose between 1 and {num_train_timesteps} (num_train_timesteps)"),
        ));
    }
    Ok(())
}

/// Descending integer timesteps as DDIM computes them.
pub fn discrete_timesteps(spacing: Spacing, steps: usize, train: i64, offset: i64) -> Vec<i64> {
    match spacing {
        Spacing::Linspace => {
            np_linspace(0.0, (train - 1) as f64, steps).iter().rev().map(|t| t.round_ties_even() as i64).collect()
        }
        Spacing::Leading => {
            let ratio = train / steps as i64;
            (0..steps as i64).rev().map(|i| i * ratio + offset).collect()
        }
        Spacing::Trailing => np_arange(train as f64, 0.0, -(train as f64) / steps as f64)
            .iter()
            .map(|t| t.round_ties_even() as i64 - 1)
            .collect(),
    }
}

/// Descending float32 timesteps as the Euler schedulers compute them.
pub fn float_timesteps(spacing: Spacing, steps: usize, train: i64, offset: i64) -> Vec<f32> {
    match spacing {
        Spacing::Linspace => np_linspace(0.0, (train - 1) as f64, steps).iter().rev().map(|&t| t as f32).collect(),
        Spacing::Leading => {
            let ratio = train / steps as i64;
            (0..steps as i64).rev().map(|i| (i * ratio) as f32 + offset as f32).collect()
        }
        Spacing::Trailing => np_arange(train as f64, 0.0, -(train as f64) / steps as f64)
            .iter()
            .map(|t| t.round_ties_even() as f32 - 1.0)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_known_schedules() {
        // SD1.5 with PNDM/DDIM leading spacing and steps_offset 1, 50 steps: 981, 961, …, 1.
        let leading = discrete_timesteps(Spacing::Leading, 50, 1000, 1);
        assert_eq!((leading[0], leading[1], leading[49], leading.len()), (981, 961, 1, 50));
        assert_eq!(discrete_timesteps(Spacing::Trailing, 4, 1000, 0), vec![999, 749, 499, 249]);
        assert_eq!(discrete_timesteps(Spacing::Linspace, 4, 1000, 0), vec![999, 666, 333, 0]);
        assert_eq!(float_timesteps(Spacing::Trailing, 1, 1000, 1), vec![999.0]);
    }
}
