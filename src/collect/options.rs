//! What a collection keeps: steps, reduction, storage dtype, and how each is written on the command line.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which of a generation's steps are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureSteps {
    All,
    Last,
    /// Step indices (0 = the first U-Net call).
    List(Vec<usize>),
}

impl CaptureSteps {
    /// `all`, `last` or a comma-separated list of step indices (`0,3`).
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "all" => Ok(Self::All),
            "last" => Ok(Self::Last),
            list => {
                let steps = list
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| {
                        Error::invalid(
                            format!("--capture-steps {text}"),
                            "write all, last, or step indices such as 0,3",
                        )
                    })?;
                if steps.is_empty() {
                    return Err(Error::invalid("--capture-steps", "give at least one step"));
                }
                Ok(Self::List(steps))
            }
        }
    }

    /// The kept step indices among `calls` U-Net calls.
    pub fn indices(&self, calls: usize) -> Result<Vec<usize>> {
        match self {
            Self::All => Ok((0..calls).collect()),
            Self::Last => Ok(vec![calls.saturating_sub(1)]),
            Self::List(steps) => {
                if let Some(bad) = steps.iter().find(|&&s| s >= calls) {
                    return Err(Error::invalid(
                        format!("--capture-steps {bad}"),
                        format!("the generation makes {calls} U-Net calls: steps are 0..={}", calls.saturating_sub(1)),
                    ));
                }
                Ok(steps.clone())
            }
        }
    }
}

/// On-the-fly reduction of each captured map, so that a collection fits the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduce {
    None,
    /// Mean over the spatial positions (rows × cols, or tokens): one vector per item and step.
    Mean,
    /// This many spatial positions per item, drawn without replacement from the item's seed (the same positions
    /// at every kept step), stored with their flat indices (`pos`).
    Sample(usize),
}

impl Reduce {
    /// `none`, `mean` or `sample:N`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad =
            || Error::invalid(format!("--reduce {text}"), "write none, mean or sample:N (N > 0 positions per item)");
        match text.trim() {
            "none" => Ok(Self::None),
            "mean" => Ok(Self::Mean),
            other => {
                let n: usize = other.strip_prefix("sample:").ok_or_else(bad)?.parse().map_err(|_| bad())?;
                if n == 0 {
                    return Err(bad());
                }
                Ok(Self::Sample(n))
            }
        }
    }
}

/// How values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    F32,
    F16,
}

impl StoreDtype {
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" => Ok(Self::F16),
            other => Err(Error::invalid(format!("--dtype {other}"), "write f32 or f16")),
        }
    }

    pub fn kind(self) -> tch::Kind {
        match self {
            Self::F32 => tch::Kind::Float,
            Self::F16 => tch::Kind::Half,
        }
    }
}

/// Which shard(s) this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSelection {
    /// `None`: every shard, one after the other (a single-process run).
    pub index: Option<usize>,
    pub count: usize,
}

impl ShardSelection {
    /// From `--shard I/N`, else `--shards N` with the array index of Slurm (`SLURM_ARRAY_TASK_ID`) or
    /// Kubernetes (`JOB_COMPLETION_INDEX`) when set; the count falls back to `SLURM_ARRAY_TASK_COUNT`.
    /// Nothing at all: one shard.
    pub fn resolve(shard: Option<&str>, shards: Option<usize>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        if let Some(text) = shard {
            let bad = || Error::invalid(format!("--shard {text}"), "write I/N with 0 <= I < N, e.g. --shard 3/16");
            let (i, n) = text.split_once('/').ok_or_else(bad)?;
            let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
            if n == 0 || i >= n {
                return Err(bad());
            }
            if shards.is_some_and(|s| s != n) {
                return Err(Error::invalid("--shards", format!("{} contradicts --shard {text}", shards.unwrap_or(0))));
            }
            return Ok(Self { index: Some(i), count: n });
        }
        let parse = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::invalid(format!("{name}={v}"), "must be a non-negative integer")),
            }
        };
        let index = match parse("SLURM_ARRAY_TASK_ID")? {
            Some(i) => Some(i),
            None => parse("JOB_COMPLETION_INDEX")?,
        };
        let count = match shards {
            Some(n) => n,
            None if index.is_some() => parse("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                Error::invalid(
                    "--shards",
                    "an array index is set in the environment: give the shard count with --shards N",
                )
            })?,
            None => 1,
        };
        if count == 0 {
            return Err(Error::invalid("--shards 0", "give at least one shard"));
        }
        if let Some(i) = index.filter(|&i| i >= count) {
            return Err(Error::invalid(
                format!("array index {i}"),
                format!("there are {count} shards (0..{count}); submit the array as --array=0-{}", count - 1),
            ));
        }
        Ok(Self { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_texts() {
        assert_eq!(CaptureSteps::parse("0,3").unwrap().indices(4).unwrap(), vec![0, 3]);
        assert_eq!(CaptureSteps::parse("last").unwrap().indices(4).unwrap(), vec![3]);
        assert!(CaptureSteps::parse("0,4").unwrap().indices(4).is_err());
        assert!(CaptureSteps::parse("x").is_err());
        assert_eq!(Reduce::parse("sample:16").unwrap(), Reduce::Sample(16));
        for bad in ["sample:0", "sample:", "max"] {
            assert!(Reduce::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(StoreDtype::parse("f16").unwrap(), StoreDtype::F16);
    }

    #[test]
    fn shard_selection() {
        let none = |_: &str| None;
        assert_eq!(ShardSelection::resolve(None, None, &none).unwrap(), ShardSelection { index: None, count: 1 });
        assert_eq!(
            ShardSelection::resolve(Some("2/4"), None, &none).unwrap(),
            ShardSelection { index: Some(2), count: 4 }
        );
        assert!(ShardSelection::resolve(Some("4/4"), None, &none).is_err());
        assert!(ShardSelection::resolve(Some("1/4"), Some(3), &none).is_err());
        let slurm = |k: &str| match k {
            "SLURM_ARRAY_TASK_ID" => Some("2".to_string()),
            "SLURM_ARRAY_TASK_COUNT" => Some("1".to_string()),
            _ => None,
        };
        // A resubmitted single element sees a task count of 1: --shards decides.
        assert_eq!(
            ShardSelection::resolve(None, Some(4), &slurm).unwrap(),
            ShardSelection { index: Some(2), count: 4 }
        );
        assert!(ShardSelection::resolve(None, None, &slurm).is_err());
        let k8s = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "3".to_string());
        assert_eq!(ShardSelection::resolve(None, Some(4), &k8s).unwrap(), ShardSelection { index: Some(3), count: 4 });
        assert_eq!(ShardSelection::resolve(None, Some(4), &none).unwrap(), ShardSelection { index: None, count: 4 });
    }
}
