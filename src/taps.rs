//! Hook points named after the diffusers module tree, written sdhelper-style (`up_blocks[1].attentions[0]`).
//!
//! Every module of a model calls [`Taps::visit`] with its path and its output; a tap can keep a copy of the
//! output (capture), replace it (edit), and stop the forward pass once everything requested has been seen.
//!
//! A position written `P@update` stands for the module's *update*, output − input (what the SDXL-Turbo sparse
//! autoencoders are trained on). Modules that can report their input call [`Taps::enter`] first; such positions
//! are listed by [`Registry::with_input`]. Captures and edits work on updates as on outputs: an edit at
//! `P@update` receives the update and its replacement `u'` makes the module return `input + u'`.

use crate::error::{Error, Result};
use crate::weights::VarBuilder;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use tch::Tensor;

/// A function that may replace a module's output: `(path, output) -> Some(replacement)` or `None` to keep it.
pub type Editor<'e> = Box<dyn FnMut(&str, &Tensor) -> Result<Option<Tensor>> + 'e>;

/// What to capture and edit during one forward pass.
#[derive(Default)]
pub struct Taps<'e> {
    wanted: HashSet<String>,
    /// Module paths whose input is kept, for `P@update` captures or edits.
    inputs_wanted: HashSet<String>,
    inputs: HashMap<String, Tensor>,
    captured: HashMap<String, Tensor>,
    editors: HashMap<String, Editor<'e>>,
    record_all: bool,
    stop_early: bool,
    attention: Option<AttentionTap>,
}

/// Which attention layers record their probabilities, and how.
struct AttentionTap {
    /// `None`: every cross-attention layer (`…attn2`).
    layers: Option<HashSet<String>>,
    per_head: bool,
    recorded: HashMap<String, Tensor>,
}

impl<'e> Taps<'e> {
    /// Taps that capture nothing: a plain forward pass.
    pub fn none() -> Self {
        Self::default()
    }

    /// Capture these positions; when `stop_early`, the pass ends right after the last one.
    pub fn capture<I, S>(positions: I, stop_early: bool) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let wanted: HashSet<String> = positions.into_iter().map(Into::into).collect();
        let inputs_wanted = wanted.iter().filter_map(|p| update_base(p).map(str::to_string)).collect();
        Self { wanted, inputs_wanted, stop_early, ..Self::default() }
    }

    /// Capture the output of every module (used to list positions with their shapes).
    pub fn capture_all() -> Self {
        Self { record_all: true, ..Self::default() }
    }

    /// Register an editor at a position; it runs before the output is captured.
    pub fn edit(&mut self, position: impl Into<String>, editor: Editor<'e>) {
        let position = position.into();
        if let Some(base) = update_base(&position) {
            self.inputs_wanted.insert(base.to_string());
        }
        self.editors.insert(position, editor);
    }

    /// Called by a module that can report its input, before it computes its output (see `P@update`).
    pub fn enter(&mut self, path: &str, input: &Tensor) {
        if self.inputs_wanted.contains(path) {
            self.inputs.insert(path.to_string(), input.shallow_clone());
        }
    }

    /// Also record attention probabilities `softmax(QKᵀ/√d)` of these layers (every cross-attention layer when
    /// `None`), averaged over heads unless `per_head`.
    pub fn record_attention(&mut self, layers: Option<Vec<String>>, per_head: bool) {
        let layers = layers.map(|l| l.into_iter().collect());
        self.attention = Some(AttentionTap { layers, per_head, recorded: HashMap::new() });
    }

    /// Whether the attention layer at `path` should record its probabilities (and whether per head).
    pub fn wants_attention(&self, path: &str, cross: bool) -> Option<bool> {
        let tap = self.attention.as_ref()?;
        let wanted = match &tap.layers {
            Some(layers) => layers.contains(path),
            None => cross,
        };
        wanted.then_some(tap.per_head)
    }

    /// Store attention probabilities `[B, heads or 1, L, S]` of a layer.
    pub fn store_attention(&mut self, path: &str, probs: Tensor) {
        if let Some(tap) = &mut self.attention {
            tap.recorded.insert(path.to_string(), probs);
        }
    }

    /// The recorded attention probabilities, by layer path.
    pub fn take_attention(&mut self) -> HashMap<String, Tensor> {
        self.attention.as_mut().map(|t| std::mem::take(&mut t.recorded)).unwrap_or_default()
    }

    /// Nothing is captured or edited: modules may then work in place on their own temporaries.
    pub fn is_passive(&self) -> bool {
        self.wanted.is_empty() && self.editors.is_empty() && !self.record_all && self.attention.is_none()
    }

    /// Called by every module with its output; returns the (possibly replaced) output.
    pub fn visit(&mut self, path: &str, output: Tensor) -> Result<Tensor> {
        if self.is_passive() {
            return Ok(output);
        }
        let output = match self.editors.get_mut(path) {
            Some(editor) => match editor(path, &output)? {
                Some(replacement) => check_replacement(path, &output, replacement)?,
                None => output,
            },
            None => output,
        };
        let output = match self.inputs.remove(path) {
            Some(input) => self.visit_update(path, &input, output)?,
            None => output,
        };
        if (self.record_all || self.wanted.contains(path)) && !self.captured.contains_key(path) {
            self.captured.insert(path.to_string(), output.shallow_clone());
        }
        if self.stop_early && !self.wanted.is_empty() && self.complete() {
            return Err(Error::Halted);
        }
        Ok(output)
    }

    /// Edit and capture the update `output − input` of a module; returns the (possibly edited) output.
    fn visit_update(&mut self, path: &str, input: &Tensor, output: Tensor) -> Result<Tensor> {
        let key = format!("{path}{UPDATE_SUFFIX}");
        if input.size() != output.size() {
            return Err(Error::Shape {
                context: format!("`{key}`"),
                why: format!(
                    "the update (output − input) needs a module whose output has its input's shape; `{path}` maps {:?} to {:?}",
                    input.size(),
                    output.size()
                ),
            });
        }
        let update = output.f_sub(input)?;
        let (output, update) = match self.editors.get_mut(&key) {
            Some(editor) => match editor(&key, &update)? {
                Some(replacement) => {
                    let replacement = check_replacement(&key, &update, replacement)?;
                    (input.f_add(&replacement)?, replacement)
                }
                None => (output, update),
            },
            None => (output, update),
        };
        if self.wanted.contains(&key) && !self.captured.contains_key(&key) {
            self.captured.insert(key, update);
        }
        Ok(output)
    }

    /// Whether every requested position has been captured.
    pub fn complete(&self) -> bool {
        self.wanted.iter().all(|p| self.captured.contains_key(p))
    }

    /// The captured outputs, by path.
    pub fn into_captured(self) -> HashMap<String, Tensor> {
        self.captured
    }

    pub fn captured(&self) -> &HashMap<String, Tensor> {
        &self.captured
    }
}

fn check_replacement(path: &str, original: &Tensor, replacement: Tensor) -> Result<Tensor> {
    if replacement.size() != original.size() {
        return Err(Error::Shape {
            context: format!("edit at `{path}`"),
            why: format!(
                "replacement has shape {:?}, the module's output has {:?}",
                replacement.size(),
                original.size()
            ),
        });
    }
    Ok(replacement.f_to_kind(original.kind())?)
}

/// A forward pass' result with an early stop ([`Error::Halted`], raised by [`Taps::visit`] once every requested
/// position is captured) turned into `None`.
pub fn stopped_early_as_none<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(out) => Ok(Some(out)),
        Err(Error::Halted) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The suffix that turns a position into its module's update (output − input).
pub const UPDATE_SUFFIX: &str = "@update";

/// The suffix naming the text stream of a joint (MMDiT) transformer block: `transformer_blocks[3]@text`.
pub const TEXT_SUFFIX: &str = "@text";

/// `Some(P)` for a position `P@update`.
pub fn update_base(position: &str) -> Option<&str> {
    position.strip_suffix(UPDATE_SUFFIX)
}

/// Parse a position written sdhelper-style (`down_blocks[1].resnets[0]`) or with dots (`down_blocks.1.resnets.0`)
/// into the canonical bracket form, keeping an `@update` suffix. Nothing is evaluated.
pub fn normalize_position(given: &str) -> Result<String> {
    let bad = |why: &str| Error::BadPositionSyntax { given: given.to_string(), why: why.to_string() };
    let (text, suffix) =
        match given.trim().split_once('@') {
            Some((base, "update")) => (base, UPDATE_SUFFIX),
            Some((base, "text")) => (base, TEXT_SUFFIX),
            Some(_) => return Err(bad(
                "the suffixes are `@update` (the module's output − input) and `@text` (a joint transformer block's \
                 text stream)",
            )),
            None => (given.trim(), ""),
        };
    Ok(format!("{}{suffix}", normalize_path(text, &bad)?))
}

fn normalize_path(text: &str, bad: &dyn Fn(&str) -> Error) -> Result<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut out = String::new();
    for part in text.split('.') {
        if part.is_empty() {
            return Err(bad("empty component between dots"));
        }
        if part.chars().all(|c| c.is_ascii_digit()) {
            if out.is_empty() {
                return Err(bad("a path cannot start with an index"));
            }
            out.push_str(&format!("[{}]", part.parse::<u64>().map_err(|_| bad("index too large"))?));
            continue;
        }
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad("names contain only letters, digits and `_`"));
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(name);
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| bad("unclosed `[`"))?;
            let index = rest[1..close].trim();
            let index: u64 = index.parse().map_err(|_| bad("an index in brackets must be a non-negative integer"))?;
            out.push_str(&format!("[{index}]"));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(bad("unexpected text after `]`"));
            }
        }
    }
    Ok(out)
}

/// Every position of a model, collected while it is built.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    /// Every position, in module-tree order.
    pub positions: Vec<String>,
    /// Positions whose module reports its input ([`Taps::enter`]), so `P@update` can be asked for.
    pub with_input: Vec<String>,
}

/// Where a module sits: its weight prefix (`down_blocks.1.attentions.0`), its position path
/// (`down_blocks[1].attentions[0]`), and the registry that collects every position of a model at build time.
#[derive(Clone)]
pub struct Node<'a> {
    pub vb: VarBuilder<'a>,
    pub path: String,
    registry: &'a RefCell<Registry>,
}

impl<'a> Node<'a> {
    pub fn root(vb: VarBuilder<'a>, registry: &'a RefCell<Registry>) -> Self {
        Self { vb, path: String::new(), registry }
    }

    /// A named child (`conv_in`, `attn2`).
    pub fn child(&self, name: &str) -> Self {
        let path = if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) };
        Self { vb: self.vb.pp(name), path, registry: self.registry }
    }

    /// An indexed child (`down_blocks[2]`).
    pub fn item(&self, name: &str, index: usize) -> Self {
        let path =
            if self.path.is_empty() { format!("{name}[{index}]") } else { format!("{}.{name}[{index}]", self.path) };
        Self { vb: self.vb.pp(name).pp(index), path, registry: self.registry }
    }

    /// Record this module as a valid position and return its path.
    pub fn register(&self) -> String {
        self.registry.borrow_mut().positions.push(self.path.clone());
        self.path.clone()
    }

    /// Record a second output of this module as a position of its own: `{path}{suffix}` (e.g. `@text`).
    pub fn register_output(&self, suffix: &str) -> String {
        let path = format!("{}{suffix}", self.path);
        self.registry.borrow_mut().positions.push(path.clone());
        path
    }

    /// Record this module as a valid position whose forward reports its input (`P@update` is valid).
    pub fn register_with_input(&self) -> String {
        self.registry.borrow_mut().with_input.push(self.path.clone());
        self.register()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_normalize() {
        assert_eq!(normalize_position("up_blocks[1].attentions[0]").unwrap(), "up_blocks[1].attentions[0]");
        assert_eq!(normalize_position("up_blocks.1.attentions.0").unwrap(), "up_blocks[1].attentions[0]");
        assert_eq!(normalize_position(" mid_block ").unwrap(), "mid_block");
        assert_eq!(normalize_position("a.to_out[0]").unwrap(), "a.to_out[0]");
        assert_eq!(normalize_position("mid_block.attentions.0@update").unwrap(), "mid_block.attentions[0]@update");
        assert_eq!(update_base("mid_block@update"), Some("mid_block"));
        assert_eq!(normalize_position("transformer_blocks.2@text").unwrap(), "transformer_blocks[2]@text");
        for bad in
            ["", "up_blocks[", "up_blocks[x]", "1.up", "up..x", "__import__('os')", "up_blocks[1]x", "a@b", "@update"]
        {
            assert!(matches!(normalize_position(bad), Err(Error::BadPositionSyntax { .. })), "{bad}");
        }
    }
}
