//! Tests of the prompt and image sources.

use super::*;
use arrow_array::{ArrayRef, Int64Array, LargeStringArray, RecordBatch, StringArray, StringViewArray};
use std::sync::Arc;

fn scratch(tag: &str) -> PathBuf {
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    let name = format!("sdscope-sources-{tag}-{}-{nanos}", std::process::id());
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, content: impl AsRef<[u8]>) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    path.to_path_buf()
}

/// Writes one row group per batch; every batch has the same (nullable) columns.
fn write_parquet(path: &Path, batches: &[Vec<(&str, ArrayRef)>]) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batches: Vec<RecordBatch> = batches
        .iter()
        .map(|b| RecordBatch::try_from_iter_with_nullable(b.iter().map(|(n, a)| (*n, a.clone(), true))).unwrap())
        .collect();
    let file = File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
        writer.flush().unwrap();
    }
    writer.close().unwrap();
    path.to_path_buf()
}

fn strings(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn resolve(spec: &Path, column: Option<&str>) -> Result<PromptSource> {
    resolve_in_cache(spec.to_str().unwrap(), column, Path::new("/nonexistent-sdscope-cache"), true)
}

fn read(spec: &Path, column: Option<&str>, limit: Option<usize>) -> Result<Vec<String>> {
    read_prompts(&resolve(spec, column)?, limit)
}

fn message(result: Result<impl std::fmt::Debug>) -> String {
    result.expect_err("expected an error").to_string()
}

#[test]
fn text_lines_skip_blanks_and_crlf() {
    let dir = scratch("text");
    let file = write(&dir.join("p.txt"), "\u{feff}a cat\r\n\r\n  \nа dog, running \r\nlast");
    let src = resolve(&file, None).unwrap();
    assert_eq!((src.format, src.column.as_deref(), src.files.clone()), (PromptFormat::Text, None, vec![file.clone()]));
    assert_eq!(read_prompts(&src, None).unwrap(), ["a cat", "а dog, running ", "last"]);
    assert_eq!(read_prompts(&src, Some(2)).unwrap(), ["a cat", "а dog, running "]);
    assert!(read_prompts(&src, Some(0)).unwrap().is_empty());
    // Unknown extensions are text too; a column makes no sense for them.
    let other = write(&dir.join("p.prompts"), "x\ny\n");
    assert_eq!(read(&other, None, None).unwrap(), ["x", "y"]);
    assert!(message(resolve(&other, Some("caption"))).contains("plain text"));
    let blank = write(&dir.join("blank.txt"), "\n \r\n");
    assert!(message(read(&blank, None, None)).contains("no prompts found"));
    let binary = write(&dir.join("bin.lst"), b"ok\n\xff\xfe\n");
    assert!(message(read(&binary, None, None)).contains("line 2 is not UTF-8"));
    assert!(message(resolve(&write(&dir.join("a.json"), "[]"), None)).contains(".jsonl"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn jsonl_columns_and_errors() {
    let dir = scratch("jsonl");
    let file =
        write(&dir.join("p.jsonl"), "{\"id\": 1, \"prompt\": \"a\", \"text\": \"t\"}\n\n{\"prompt\": \"b\\nc\"}\r\n");
    let src = resolve(&file, None).unwrap();
    assert_eq!((src.format, src.column.as_deref()), (PromptFormat::Jsonl, Some("prompt")));
    assert_eq!(read_prompts(&src, None).unwrap(), ["a", "b\nc"]);
    assert_eq!(read_prompts(&src, Some(1)).unwrap(), ["a"]);
    // The default column is found ignoring case; a named column must match exactly.
    let upper = write(&dir.join("u.ndjson"), "{\"TEXT\": \"x\"}\n");
    assert_eq!(resolve(&upper, None).unwrap().column.as_deref(), Some("TEXT"));
    let err = message(resolve(&file, Some("caption")));
    assert!(err.contains("no column `caption`") && err.contains("available columns: id, prompt, text"), "{err}");
    let none = write(&dir.join("n.jsonl"), "{\"a\": \"x\", \"b\": 2}\n");
    let err = message(resolve(&none, None));
    assert!(err.contains("caption, prompt, text") && err.contains("available columns: a, b"), "{err}");
    let cases = [
        ("{\"prompt\": \"a\"}\n{\"prompt\": null}\n", "line 2: `prompt` is null"),
        ("{\"prompt\": \"a\"}\n\n{\"prompt\": 3}\n", "line 3: `prompt` is not a string but a number"),
        ("{\"prompt\": \"a\"}\n{\"other\": \"b\"}\n", "line 2 has no `prompt` field"),
        ("{\"prompt\": \"a\"}\n[1]\n", "line 2 is not a JSON object"),
        ("{\"prompt\": \"a\"}\n{\"prompt\": \n", "line 2 is not valid JSON"),
    ];
    for (i, (content, expected)) in cases.into_iter().enumerate() {
        let f = write(&dir.join(format!("bad{i}.jsonl")), content);
        let err = message(read(&f, None, None));
        assert!(err.contains(expected) && err.contains(&format!("bad{i}.jsonl")), "{err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn csv_and_tsv_quoting() {
    let dir = scratch("csv");
    let csv = "\u{feff}id,caption,url\r\n1,\"a cat, sitting\",u1\r\n2,\"two\nlines, \"\"quoted\"\"\",u2\n3,,u3\n";
    let file = write(&dir.join("p.csv"), csv);
    let src = resolve(&file, None).unwrap();
    assert_eq!((src.format, src.column.as_deref()), (PromptFormat::Csv, Some("caption")));
    assert_eq!(read_prompts(&src, None).unwrap(), ["a cat, sitting", "two\nlines, \"quoted\"", ""]);
    assert_eq!(read(&file, Some("id"), Some(2)).unwrap(), ["1", "2"]);
    let err = message(resolve(&file, Some("prompt")));
    assert!(err.contains("available columns: id, caption, url"), "{err}");
    let short = write(&dir.join("short.csv"), "id,caption\n1,a\n2\n");
    assert!(message(read(&short, None, None)).contains("line 3 has no `caption` field"));
    let tsv = write(&dir.join("p.tsv"), "prompt\tn\na, b\t1\n\"x\ty\"\t2\n");
    let src = resolve(&tsv, None).unwrap();
    assert_eq!((src.format, src.column.as_deref()), (PromptFormat::Tsv, Some("prompt")));
    assert_eq!(read_prompts(&src, None).unwrap(), ["a, b", "x\ty"]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn parquet_projection_limit_and_types() {
    let dir = scratch("parquet");
    let groups: Vec<Vec<(&str, ArrayRef)>> = (0..4)
        .map(|g| {
            let caps: Vec<String> = (0..3).map(|i| format!("p{}", g * 3 + i)).collect();
            let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
            vec![("id", Arc::new(Int64Array::from(vec![g; 3])) as ArrayRef), ("caption", strings(&caps))]
        })
        .collect();
    let file = write_parquet(&dir.join("p.parquet"), &groups);
    let src = resolve(&file, None).unwrap();
    assert_eq!((src.format, src.column.as_deref()), (PromptFormat::Parquet, Some("caption")));
    let all: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    assert_eq!(read_prompts(&src, None).unwrap(), all);
    for limit in [1, 3, 4, 7, 12, 50] {
        assert_eq!(read_prompts(&src, Some(limit)).unwrap(), all[..limit.min(12)], "limit {limit}");
    }
    let err = message(read(&file, Some("id"), None));
    assert!(err.contains("column `id` holds Int64, not strings"), "{err}");
    assert!(message(resolve(&file, Some("nope"))).contains("available columns: id, caption"));
    // LargeUtf8 and Utf8View columns; nulls are errors naming the row.
    let large = vec![("text", Arc::new(LargeStringArray::from(vec!["l0", "l1"])) as ArrayRef)];
    let large = write_parquet(&dir.join("large.parquet"), &[large]);
    assert_eq!(read(&large, None, None).unwrap(), ["l0", "l1"]);
    let view = vec![("prompt", Arc::new(StringViewArray::from(vec!["v0", "v1"])) as ArrayRef)];
    let view = write_parquet(&dir.join("view.parquet"), &[view]);
    assert_eq!(read(&view, None, None).unwrap(), ["v0", "v1"]);
    let nulls = |v: Vec<Option<&str>>| vec![("caption", Arc::new(StringArray::from(v)) as ArrayRef)];
    let with_null =
        write_parquet(&dir.join("null.parquet"), &[nulls(vec![Some("a"), Some("b")]), nulls(vec![Some("c"), None])]);
    let err = message(read(&with_null, None, None));
    assert!(err.contains("null in row 3 (counting from 0)"), "{err}");
    assert_eq!(read(&with_null, None, Some(3)).unwrap(), ["a", "b", "c"]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn corrupt_parquet_is_an_error() {
    let dir = scratch("corrupt");
    let fake = write(&dir.join("fake.parquet"), "caption\nnot parquet at all\n");
    assert!(message(resolve(&fake, None)).contains("not a readable Parquet file"));
    let good = write_parquet(&dir.join("good.parquet"), &[vec![("caption", strings(&["a", "b"]))]]);
    let mut bytes = std::fs::read(&good).unwrap();
    bytes.truncate(bytes.len() - 12);
    let cut = write(&dir.join("cut.parquet"), &bytes);
    assert!(message(resolve(&cut, None)).contains("not a readable Parquet file"));
    // A damaged data page (footer intact) fails when read, without panicking.
    let mut bytes = std::fs::read(&good).unwrap();
    for b in &mut bytes[4..20] {
        *b = 0xff;
    }
    let damaged = write(&dir.join("damaged.parquet"), &bytes);
    assert!(read(&damaged, None, None).is_err());
    // Damage that makes the parquet crate panic (found by flipping every byte of the pyarrow file) is an error.
    let pyarrow = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captions.parquet")).unwrap();
    for (i, value) in [(14, 0x00), (231, 0xff), (601, 0x00), (746, 0xff), (1212, 0xff), (1585, 0xff), (1591, 0xff)] {
        let mut bytes = pyarrow.clone();
        bytes[i] = value;
        let file = write(&dir.join(format!("flip{i}.parquet")), &bytes);
        let source = PromptSource {
            spec: "flipped".into(),
            column: Some("caption".into()),
            format: PromptFormat::Parquet,
            files: vec![file],
        };
        assert!(read_prompts(&source, None).is_err(), "byte {i}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn pyarrow_file_is_read() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captions.parquet");
    let src = resolve(&file, None).unwrap();
    assert_eq!(src.column.as_deref(), Some("caption"));
    let prompts = read_prompts(&src, None).unwrap();
    assert_eq!(prompts.len(), 20);
    assert_eq!((prompts[0].as_str(), prompts[19].as_str()), ("a photo of item 0", "a photo of item 19"));
    assert_eq!((prompts[3].as_str(), prompts[7].as_str()), ("a cat, a dog, and a bird", "café crème on a table, 東京"));
    assert_eq!(read_prompts(&src, Some(12)).unwrap(), prompts[..12]);
    assert_eq!(read(&file, Some("url"), Some(1)).unwrap(), ["https://example.com/0.jpg"]);
    assert!(message(read(&file, Some("aesthetic"), None)).contains("holds Float64"));
}

#[test]
fn parquet_folder_in_path_order() {
    let dir = scratch("folder");
    write_parquet(&dir.join("b/0.parquet"), &[vec![("text", strings(&["b0"]))]]);
    write_parquet(&dir.join("a/1.parquet"), &[vec![("text", strings(&["a1"]))]]);
    write_parquet(&dir.join("a/0.PARQUET"), &[vec![("text", strings(&["a0"]))]]);
    write_parquet(&dir.join(".hidden/0.parquet"), &[vec![("text", strings(&["hidden"]))]]);
    write(&dir.join("notes.txt"), "ignored");
    let src = resolve(&dir, None).unwrap();
    assert_eq!((src.format, src.column.as_deref(), src.files.len()), (PromptFormat::Parquet, Some("text"), 3));
    assert_eq!(read_prompts(&src, None).unwrap(), ["a0", "a1", "b0"]);
    assert_eq!(read_prompts(&src, Some(2)).unwrap(), ["a0", "a1"]);
    write_parquet(&dir.join("c.parquet"), &[vec![("other", strings(&["c"]))]]);
    assert!(message(read(&dir, None, None)).contains("no column `text`"));
    let empty = scratch("folder-empty");
    assert!(message(resolve(&empty, None)).contains("no .parquet files"));
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(empty).ok();
}

#[test]
fn hub_dataset_from_fake_cache() {
    let cache = scratch("hub");
    let repo = dataset_dir(&cache, "o/n");
    write(&repo.join("refs/main"), "abc123\n");
    let snap = repo.join("snapshots/abc123");
    write_parquet(&snap.join("data/train-0001.parquet"), &[vec![("caption", strings(&["t1"]))]]);
    write_parquet(&snap.join("data/train-0000.parquet"), &[vec![("caption", strings(&["t0"]))]]);
    write_parquet(&snap.join("data/test-0000.parquet"), &[vec![("caption", strings(&["x"]))]]);
    write(&snap.join("README.md"), "card");
    let src = resolve_in_cache("o/n", None, &cache, true).unwrap();
    assert_eq!(src.files, [snap.join("data/train-0000.parquet"), snap.join("data/train-0001.parquet")]);
    assert_eq!((src.spec.as_str(), src.format), ("o/n", PromptFormat::Parquet));
    assert_eq!(read_prompts(&src, None).unwrap(), ["t0", "t1"]);
    // A named revision via refs/, or a commit hash directly.
    write(&repo.join("refs/v2"), "def456");
    write_parquet(&repo.join("snapshots/def456/x.parquet"), &[vec![("prompt", strings(&["v2"]))]]);
    assert_eq!(read_prompts(&resolve_in_cache("o/n@v2", None, &cache, true).unwrap(), None).unwrap(), ["v2"]);
    assert_eq!(resolve_in_cache("o/n@abc123", None, &cache, true).unwrap().files.len(), 2);
    match resolve_in_cache("o/absent@dev", None, &cache, true) {
        Err(Error::Hub { repo, why }) => {
            assert_eq!(repo, "o/absent");
            assert!(why.contains(&dataset_dir(&cache, "o/absent").display().to_string()), "{why}");
            let fetch = "huggingface-cli download --repo-type dataset o/absent --revision dev --include \"*.parquet\"";
            assert!(why.contains(fetch) && why.contains("HF_HUB_OFFLINE"), "{why}");
        }
        other => panic!("expected Error::Hub, got {other:?}"),
    }
    std::fs::remove_dir_all(cache).ok();
}

#[test]
fn spec_shapes() {
    let cache = Path::new("/nonexistent-sdscope-cache");
    assert!(matches!(resolve_in_cache("./missing.txt", None, cache, true), Err(Error::MissingFile { .. })));
    assert!(matches!(resolve_in_cache("data/prompts.csv", None, cache, true), Err(Error::MissingFile { .. })));
    assert!(matches!(resolve_in_cache("a/b/c", None, cache, true), Err(Error::MissingFile { .. })));
    for bad in ["prompts", "a b/c", "o/n@", ""] {
        let err = message(resolve_in_cache(bad, None, cache, true));
        assert!(err.contains("owner/name"), "{bad}: {err}");
    }
    assert_eq!(parse_dataset_id("o/n@refs/convert/parquet"), Some(("o/n", "refs/convert/parquet")));
    assert_eq!(parse_dataset_id("o/n"), Some(("o/n", "main")));
    assert_eq!(parse_dataset_id("o/n@../x"), None);
    let files = ["b/test.parquet", "a/train.parquet", "constrained.parquet", "README.md"].map(String::from);
    assert_eq!(choose_parquet(files.to_vec()), ["a/train.parquet"]);
    let one_split = ["data/validation-0.parquet", "data/validation-1.parquet"].map(String::from);
    assert_eq!(choose_parquet(one_split.to_vec()), one_split);
}

#[test]
fn image_folder_labels_and_order() {
    let dir = scratch("images");
    for f in ["b.PNG", "a.jpg", "cats/tabby/z.webp", "cats/a.jpeg", "dogs/x.tif", "notes.txt", ".hidden.png"] {
        write(&dir.join(f), f);
    }
    let items = list_images(&dir, None).unwrap();
    let got: Vec<(String, Option<&str>)> =
        items.iter().map(|i| (slash_path(i.path.strip_prefix(&dir).unwrap()), i.label.as_deref())).collect();
    let expected = [
        ("a.jpg", None),
        ("b.PNG", None),
        ("cats/a.jpeg", Some("cats")),
        ("cats/tabby/z.webp", Some("cats/tabby")),
        ("dogs/x.tif", Some("dogs")),
    ];
    assert_eq!(got, expected.map(|(p, l)| (p.to_string(), l)));
    assert_eq!(list_images(&dir, Some(2)).unwrap(), items[..2]);
    #[cfg(unix)]
    {
        // A symlink loop is not followed; a symlinked file is taken.
        std::os::unix::fs::symlink(&dir, dir.join("cats/loop")).unwrap();
        std::os::unix::fs::symlink(dir.join("a.jpg"), dir.join("dogs/link.jpg")).unwrap();
        let again = list_images(&dir, None).unwrap();
        assert_eq!(again.len(), 6);
        assert_eq!(again[4], ImageItem { path: dir.join("dogs/link.jpg"), label: Some("dogs".into()) });
    }
    let single = list_images(&dir.join("a.jpg"), None).unwrap();
    assert_eq!(single, [ImageItem { path: dir.join("a.jpg"), label: None }]);
    let empty = scratch("images-empty");
    write(&empty.join("x.txt"), "");
    let err = message(list_images(&empty, None));
    assert!(err.contains("no images found") && err.contains(".png, .jpg"), "{err}");
    assert!(matches!(list_images(&empty.join("nope"), None), Err(Error::MissingFile { .. })));
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(empty).ok();
}

#[test]
fn image_list_file() {
    let dir = scratch("list");
    write(&dir.join("imgs/one.png"), "1");
    let abs = write(&dir.join("elsewhere/two.bin"), "2");
    let list = format!("# comment\n\nimgs/one.png\tcat\r\n  {}\t\n", abs.display());
    let list = write(&dir.join("list.txt"), list);
    let items = list_images(&list, None).unwrap();
    let expected = [
        ImageItem { path: dir.join("imgs/one.png"), label: Some("cat".into()) },
        ImageItem { path: abs.clone(), label: None },
    ];
    assert_eq!(items, expected);
    assert_eq!(list_images(&list, Some(1)).unwrap(), expected[..1]);
    let bad = write(&dir.join("bad.lst"), "imgs/one.png\nimgs/missing.png\tx\n");
    match list_images(&bad, None) {
        Err(Error::MissingFile { path, hint }) => {
            assert_eq!(path, dir.join("imgs/missing.png"));
            assert!(hint.unwrap().contains("line 2"));
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    let empty = write(&dir.join("empty.txt"), "# nothing\n");
    assert!(message(list_images(&empty, None)).contains("no images found"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn fingerprints() {
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // sha256 of the empty input, and of u64le(1) ++ "a".
    assert_eq!(fingerprint_prompts(&[]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let mut one = Sha256::new();
    one.update([1, 0, 0, 0, 0, 0, 0, 0, b'a']);
    assert_eq!(fingerprint_prompts(&p(&["a"])), hex(&one.finalize()));
    assert_ne!(fingerprint_prompts(&p(&["ab", "c"])), fingerprint_prompts(&p(&["a", "bc"])));
    assert_ne!(fingerprint_prompts(&p(&["a", "b"])), fingerprint_prompts(&p(&["b", "a"])));

    let (a, b) = (scratch("fp-a"), scratch("fp-b"));
    for root in [&a, &b] {
        write(&root.join("cats/1.png"), "pixels");
        write(&root.join("2.jpg"), "more");
    }
    let fp = |root: &Path| fingerprint_images(&list_images(root, None).unwrap(), root).unwrap();
    assert_eq!(fp(&a), fp(&b));
    assert_eq!(fp(&a).len(), 64);
    write(&b.join("cats/1.png"), "pixelz");
    assert_ne!(fp(&a), fp(&b));
    // The label counts, and a list file's folder is the root.
    let items = list_images(&a, None).unwrap();
    let relabelled: Vec<ImageItem> = items.iter().map(|i| ImageItem { label: None, ..i.clone() }).collect();
    assert_ne!(fingerprint_images(&relabelled, &a).unwrap(), fp(&a));
    let list = write(&a.join("list.txt"), "2.jpg\ncats/1.png\tcats\n");
    let listed = list_images(&list, None).unwrap();
    assert_eq!(fingerprint_images(&listed, &list).unwrap(), fp(&a));
    std::fs::remove_file(a.join("2.jpg")).unwrap();
    assert!(matches!(fingerprint_images(&items, &a), Err(Error::Io { .. })));
    std::fs::remove_dir_all(a).ok();
    std::fs::remove_dir_all(b).ok();
}
