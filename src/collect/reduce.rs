//! Per-item reduction of captured maps and the axis names that describe what is stored.

use super::options::Reduce;
use crate::error::{Error, Result};
use rand::SeedableRng;
use tch::{Kind, Tensor};

/// Axis names of one step of a module's output without its batch dimension: `[C, h, w]` → channel, row, col;
/// `[L, C]` (transformer tokens) → token, channel; `[C]` → channel.
pub fn native_layout(dims: usize) -> Result<Vec<&'static str>> {
    match dims {
        3 => Ok(vec!["channel", "row", "col"]),
        2 => Ok(vec!["token", "channel"]),
        1 => Ok(vec!["channel"]),
        n => Err(Error::invalid("capture", format!("a module output with {n} dimensions per image cannot be stored"))),
    }
}

/// The stored axes of one item after reduction (without the item and step axes).
pub fn reduced_layout(native: &[&'static str], reduce: Reduce) -> Vec<&'static str> {
    match reduce {
        Reduce::None => native.to_vec(),
        Reduce::Mean => vec!["channel"],
        Reduce::Sample(_) => vec!["sample", "channel"],
    }
}

/// Reduce one item's captures `[S, ..native]` (S kept steps). Returns the reduced tensor `[S, ..reduced]` and,
/// for `Sample`, the flat spatial indices drawn `[N]` (int64, ascending) from `seed`.
pub fn reduce_item(x: &Tensor, reduce: Reduce, seed: i64) -> Result<(Tensor, Option<Tensor>)> {
    let native = native_layout(x.dim() - 1)?;
    // As tokens `[S, P, C]` (P spatial positions), the form every reduction works on.
    let tokens = match native.as_slice() {
        ["channel", "row", "col"] => x.f_flatten(2, 3)?.f_transpose(1, 2)?,
        ["token", "channel"] => x.shallow_clone(),
        _ => {
            return match reduce {
                Reduce::None => Ok((x.shallow_clone(), None)),
                _ => Err(Error::invalid("--reduce", "this position has no spatial axes to reduce")),
            }
        }
    };
    match reduce {
        Reduce::None => Ok((x.shallow_clone(), None)),
        Reduce::Mean => Ok((tokens.f_mean_dim(Some(&[1i64][..]), false, Kind::Float)?.f_to_kind(x.kind())?, None)),
        Reduce::Sample(n) => {
            let positions = tokens.size()[1] as usize;
            if n > positions {
                return Err(Error::invalid(
                    format!("--reduce sample:{n}"),
                    format!("the maps have {positions} spatial positions; sample at most that many"),
                ));
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed as u64);
            let mut picked: Vec<i64> =
                rand::seq::index::sample(&mut rng, positions, n).into_iter().map(|i| i as i64).collect();
            picked.sort_unstable();
            let index = Tensor::from_slice(&picked);
            Ok((tokens.f_index_select(1, &index.f_to_device(x.device())?)?, Some(index)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_keep_the_right_values() {
        let x = Tensor::arange(2 * 3 * 2 * 2, (Kind::Float, tch::Device::Cpu)).reshape([2, 3, 2, 2]);
        let (mean, pos) = reduce_item(&x, Reduce::Mean, 0).unwrap();
        assert!(pos.is_none());
        assert_eq!(mean.size(), [2, 3]);
        assert!(mean.allclose(&x.mean_dim(Some(&[2i64, 3][..]), false, Kind::Float), 0.0, 1e-6, false));
        let (sample, pos) = reduce_item(&x, Reduce::Sample(3), 7).unwrap();
        let pos = pos.unwrap();
        assert_eq!(sample.size(), [2, 3, 3]);
        let picked = Vec::<i64>::try_from(&pos).unwrap();
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
        for (j, &p) in picked.iter().enumerate() {
            let (r, c) = (p / 2, p % 2);
            assert!(sample.get(1).get(j as i64).equal(&x.get(1).select(1, r).select(1, c)));
        }
        let (again, _) = reduce_item(&x, Reduce::Sample(3), 7).unwrap();
        assert!(again.equal(&sample), "the same seed draws the same positions");
        assert!(reduce_item(&x, Reduce::Sample(5), 0).is_err());
        let tokens = Tensor::randn([1, 4, 6], (Kind::Float, tch::Device::Cpu));
        assert_eq!(reduce_item(&tokens, Reduce::Sample(2), 1).unwrap().0.size(), [1, 2, 6]);
    }
}
