//! Notebook display of a collection: its state shard by shard, what each position holds, the kept images.

use super::picture::{Picture, PictureGrid};
use super::tables::table;
use super::{emit, titled};
use crate::collection::layout::{image_file, shard_dir_name};
use crate::collection::{Collection, ShardState};
use crate::error::Result;

impl Collection {
    /// A summary table per shard (state, items, bytes) and per position (stored shape, layout, dtype).
    pub fn to_html(&self) -> Result<String> {
        let status = self.status();
        let n = status.len();
        let complete = status.iter().filter(|s| s.state == ShardState::Complete).count();
        let shard_rows: Vec<Vec<String>> = status
            .iter()
            .map(|s| {
                let state = match s.state {
                    ShardState::Complete => "complete",
                    ShardState::Partial => "partial",
                    ShardState::Missing => "missing",
                };
                vec![
                    shard_dir_name(s.index, n),
                    state.into(),
                    s.items.to_string(),
                    format!("{:.2} MB", s.bytes as f64 / 1e6),
                ]
            })
            .collect();
        let first_complete = status.iter().find(|s| s.state == ShardState::Complete).map(|s| s.index);
        let mut position_rows = Vec::new();
        for p in &self.manifest.positions {
            let (shape, layout, dtype) = match first_complete.map(|i| self.read(i, p)).transpose()? {
                Some(t) => (format!("{:?}", &t.x.size()[1..]), t.layout[1..].join(", "), format!("{:?}", t.x.kind())),
                None => ("-".into(), "-".into(), "-".into()),
            };
            position_rows.push(vec![p.clone(), shape, layout, dtype]);
        }
        let head = format!(
            "collection {}: {} items ({}), {complete}/{n} shards complete",
            self.dir.display(),
            self.manifest.source.items,
            self.manifest.source.kind
        );
        Ok(titled(
            &head,
            &format!(
                "{}<div style=\"height:6px\"></div>{}",
                table(&["position", "per item", "axes", "dtype"], &position_rows),
                table(&["shard", "state", "items", "size"], &shard_rows)
            ),
        ))
    }

    pub fn evcxr_display(&self) {
        let plain = format!("Collection {}: {} shards", self.dir.display(), self.shard_count());
        match self.to_html() {
            Ok(html) => emit(&html, &plain),
            Err(e) => println!("{e}"),
        }
    }

    /// The images kept with `--keep-images` (at most `limit`, complete shards in order), captioned with their
    /// item index and prompt.
    pub fn images(&self, limit: usize) -> Result<PictureGrid> {
        let mut pictures = Vec::new();
        for s in self.status().into_iter().filter(|s| s.state == ShardState::Complete) {
            let dir = self.complete_shard(s.index)?;
            for row in self.items(s.index)? {
                if pictures.len() >= limit {
                    return Ok(PictureGrid::new(pictures));
                }
                let Some(index) = row["index"].as_u64() else { continue };
                let file = image_file(&dir, index);
                if file.is_file() {
                    let caption = format!("{index}: {}", row["prompt"].as_str().unwrap_or(""));
                    pictures.push(Picture::open(&file)?.with_caption(caption));
                }
            }
        }
        Ok(PictureGrid::new(pictures))
    }
}
