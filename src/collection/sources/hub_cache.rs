//! Folders of Parquet files and dataset repos in the Hugging Face cache.

use super::*;

/// A file found under a root: its path and its path relative to the root as `/`-separated components.
pub(super) struct Found {
    pub(super) path: PathBuf,
    pub(super) rel: Vec<String>,
    pub(super) key: Vec<u8>,
}

/// The files under `root` (recursively) that `keep` accepts, sorted by relative path in byte order. Hidden entries
/// are skipped; symlinks to folders are not followed, symlinks to files are.
pub(super) fn walk(root: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<String>::new(), Vec::<u8>::new())];
    while let Some((dir, rel, key)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            let mut rel = rel.clone();
            rel.push(name.to_string_lossy().into_owned());
            let mut key = key.clone();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(name.as_encoded_bytes());
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_dir() {
                stack.push((path, rel, key));
            } else if (kind.is_file() || (kind.is_symlink() && path.is_file())) && keep(&path) {
                found.push(Found { path, rel, key });
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

pub(super) fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    let ext = path.extension().and_then(OsStr::to_str);
    ext.is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

pub(super) fn is_parquet(path: &Path) -> bool {
    has_extension(path, &["parquet"])
}

pub(super) fn folder_parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = walk(dir, &is_parquet)?.into_iter().map(|f| f.path).collect();
    if files.is_empty() {
        let why = "a folder is read as a Parquet dataset, and it holds no .parquet files (searched recursively); \
            for a text, JSONL, CSV or TSV file pass the file itself";
        return Err(Error::invalid(format!("prompt source {}", dir.display()), why));
    }
    Ok(files)
}

/// Whether a `/`-separated relative path names the train split (`train/…`, `train-00000-of-00004.parquet`, …).
pub(super) fn names_train(rel: &str) -> bool {
    rel.split(['/', '-', '_', '.']).any(|part| part.eq_ignore_ascii_case("train"))
}

/// The `.parquet` files among `rel` paths, sorted in byte order; only the train split's when there are several.
pub(super) fn choose_parquet(mut rel: Vec<String>) -> Vec<String> {
    rel.retain(|r| is_parquet(Path::new(r)));
    rel.sort();
    let train = rel.iter().filter(|r| names_train(r)).count();
    if train > 0 && train < rel.len() {
        rel.retain(|r| names_train(r));
    }
    rel
}

/// `<cache>/datasets--owner--name`.
pub(super) fn dataset_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("datasets--{}", repo.replace('/', "--")))
}

/// The cached snapshot of `revision`: `refs/<revision>`'s commit, or a snapshot named by the revision itself;
/// for the default `main` without a ref, the newest snapshot holding `.parquet` files.
pub(super) fn cached_snapshot(dir: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = dir.join("snapshots");
    if let Ok(commit) = std::fs::read_to_string(dir.join("refs").join(revision)) {
        let snap = snapshots.join(commit.trim());
        return snap.is_dir().then_some(snap);
    }
    if snapshots.join(revision).is_dir() {
        return Some(snapshots.join(revision));
    }
    if revision != "main" {
        return None;
    }
    let entries = std::fs::read_dir(&snapshots).ok()?;
    let with_parquet = |p: &PathBuf| walk(p, &is_parquet).is_ok_and(|f| !f.is_empty());
    let snaps = entries.filter_map(|e| Some(e.ok()?.path())).filter(with_parquet);
    snaps.max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// The parquet files of a cached snapshot (split preference applied), as paths.
pub(super) fn snapshot_parquet(snap: &Path) -> Result<Vec<PathBuf>> {
    let found = walk(snap, &is_parquet)?;
    Ok(choose_parquet(found.into_iter().map(|f| f.rel.join("/")).collect()).iter().map(|r| snap.join(r)).collect())
}

pub(super) fn fetch_command(repo: &str, revision: &str) -> String {
    let rev = match revision {
        "main" => String::new(),
        r => format!(" --revision {r}"),
    };
    format!(
        "huggingface-cli download --repo-type dataset {repo}{rev} --include \"*.parquet\"\n  \
        (this fills the Hugging Face cache, $HF_HOME/hub, by default ~/.cache/huggingface/hub; copy it here or \
        point HF_HOME at it)"
    )
}

pub(super) const NO_PARQUET: &str = "datasets that are not stored as Parquet usually have a Parquet conversion: \
    use `owner/name@refs/convert/parquet`";

/// The parquet files of a hub dataset: from the cache, else downloaded unless `offline`.
pub(super) fn dataset_files(repo: &str, revision: &str, cache: &Path, offline: bool) -> Result<Vec<PathBuf>> {
    let dir = dataset_dir(cache, repo);
    if let Some(snap) = cached_snapshot(&dir, revision) {
        let files = snapshot_parquet(&snap)?;
        if !files.is_empty() {
            return Ok(files);
        }
        if offline {
            let why = format!("its cached snapshot {} holds no .parquet files; {NO_PARQUET}", snap.display());
            return Err(Error::Hub { repo: repo.into(), why });
        }
    }
    let not_cached = |why: String| {
        let why = format!(
            "dataset (revision {revision}) is not in the Hugging Face cache (looked in {}) and the hub cannot be \
            reached: {why}\nfetch it on a machine with network access with:\n  {}",
            dir.display(),
            fetch_command(repo, revision)
        );
        Error::Hub { repo: repo.into(), why }
    };
    if offline {
        return Err(not_cached("HF_HUB_OFFLINE is set, so nothing was downloaded".into()));
    }
    download_dataset(repo, revision, cache, &not_cached)
}

pub(super) fn api_repo(repo: &str, revision: &str, cache: &Path) -> std::result::Result<ApiRepo, ApiError> {
    Ok(crate::hub::hub_api(cache)?.repo(Repo::with_revision(repo.into(), RepoType::Dataset, revision.into())))
}

/// HTTP 401/403/404 are the repo's fault; anything else means the hub is unreachable.
pub(super) fn hub_failure(repo: &str, err: ApiError, not_cached: &dyn Fn(String) -> Error) -> Error {
    let why = err.to_string();
    if ["401", "403", "404"].iter().any(|code| why.contains(&format!("status code {code}"))) {
        let why = format!(
            "{why}: no such dataset, revision or file, or it is private or gated (check the id; for a gated \
            dataset accept its terms on huggingface.co and set HF_TOKEN)"
        );
        return Error::Hub { repo: repo.into(), why };
    }
    not_cached(why)
}

pub(super) fn download_dataset(
    repo: &str,
    revision: &str,
    cache: &Path,
    not_cached: &dyn Fn(String) -> Error,
) -> Result<Vec<PathBuf>> {
    let api = api_repo(repo, revision, cache).map_err(|e| not_cached(e.to_string()))?;
    let info = api.info().map_err(|e| hub_failure(repo, e, not_cached))?;
    let files = choose_parquet(info.siblings.into_iter().map(|s| s.rfilename).collect());
    if files.is_empty() {
        let why = format!("the dataset has no .parquet files at revision {revision}; {NO_PARQUET}");
        return Err(Error::Hub { repo: repo.into(), why });
    }
    let mut paths = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        eprintln!("[sdscope] fetching {file} from dataset {repo} ({}/{})", i + 1, files.len());
        paths.push(api.get(file).map_err(|e| hub_failure(repo, e, not_cached))?);
    }
    Ok(paths)
}
