//! Which files are a `ModelCheckpoint`'s own (G.9): the relative paths its `filename` and `name_last`
//! templates can produce inside its `dirpath`. Only those may be deleted, and only where they can be does
//! the `"last"` search look. Pure: paths are judged by their text; the caller resolves symlinks.
//!
//! Section numbers in this file (B.7, G.3, S059, …) cite the guide's Reference chapter
//! (`book/src/reference.md`), which numbers its sections the same way.

use std::path::Path;

use fulgur_rules::template::Piece;

use super::config::CheckpointConfig;
use super::filename::FilenameTemplate;

/// One step of a [`NamePattern`].
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// This text.
    Text(String),
    /// A field's value: one or more characters, none of them `/`.
    Value,
    /// The number of a version suffix: one or more ASCII digits.
    Digits,
}

/// The relative paths one filename template can produce inside `dirpath`: its directories (a `/` in the
/// template's own text; a value never holds one), then the file name, with or without a version suffix,
/// and the extension.
#[derive(Debug, Clone, PartialEq)]
pub struct NamePattern {
    dirs: Vec<Vec<Token>>,
    /// The file name without the version suffix, then with it; each with the extension.
    files: [Vec<Token>; 2],
}

impl NamePattern {
    /// The pattern of `template` rendered with `cfg`'s settings (`auto_insert_metric_name`, the join and
    /// equals characters, the extension).
    pub fn new(cfg: &CheckpointConfig, template: &FilenameTemplate) -> Self {
        let mut segments: Vec<Vec<Token>> = vec![Vec::new()];
        let push_text = |segment: &mut Vec<Token>, text: &str| {
            if !text.is_empty() {
                segment.push(Token::Text(text.to_string()));
            }
        };
        // A parsed template always parses again; an unparsable one would name nothing.
        let pieces = fulgur_rules::template::parse(template.as_str()).unwrap_or_default();
        for piece in pieces {
            match piece {
                Piece::Text(text) => {
                    let mut parts = text.split('/');
                    if let (Some(first), Some(segment)) = (parts.next(), segments.last_mut()) {
                        push_text(segment, first);
                    }
                    for part in parts {
                        let mut segment = Vec::new();
                        push_text(&mut segment, part);
                        segments.push(segment);
                    }
                }
                Piece::Field(field) => {
                    let Some(segment) = segments.last_mut() else {
                        continue;
                    };
                    if cfg.auto_insert_metric_name {
                        let name = format!("{}{}", field.name.replace('/', "_"), cfg.equals_char);
                        push_text(segment, &name);
                    }
                    segment.push(Token::Value);
                }
            }
        }
        let mut plain = segments.pop().unwrap_or_default();
        let mut versioned = plain.clone();
        versioned.push(Token::Text(format!("{}v", cfg.join_char)));
        versioned.push(Token::Digits);
        for file in [&mut plain, &mut versioned] {
            file.push(Token::Text(cfg.file_extension.clone()));
        }
        Self {
            dirs: segments,
            files: [plain, versioned],
        }
    }

    /// Whether the template can name the file at `rel` (path components below `dirpath`).
    pub fn file(&self, rel: &[&str]) -> bool {
        let Some((name, dirs)) = rel.split_last() else {
            return false;
        };
        self.dir(dirs) && self.files.iter().any(|f| matches(f, name))
    }

    /// Whether the template writes its files in the directory `rel` (empty: `dirpath` itself).
    pub fn dir(&self, rel: &[&str]) -> bool {
        rel.len() == self.dirs.len() && self.leads_to(rel)
    }

    /// Whether `rel` is `dirpath`, or a directory on the way to where the template writes.
    pub fn leads_to(&self, rel: &[&str]) -> bool {
        rel.len() <= self.dirs.len() && rel.iter().zip(&self.dirs).all(|(c, d)| matches(d, c))
    }
}

/// Whether `text` is one of the strings `tokens` describe.
fn matches(tokens: &[Token], text: &str) -> bool {
    match tokens.split_first() {
        None => text.is_empty(),
        Some((Token::Text(t), rest)) => text
            .strip_prefix(t.as_str())
            .is_some_and(|text| matches(rest, text)),
        Some((run, rest)) => {
            let allowed = |c: char| match run {
                Token::Digits => c.is_ascii_digit(),
                _ => c != '/',
            };
            for (i, c) in text.char_indices() {
                if !allowed(c) {
                    return false;
                }
                if matches(rest, &text[i + c.len_utf8()..]) {
                    return true;
                }
            }
            false
        }
    }
}

/// The files a callback may delete and the directories where the `"last"` search looks (G.9): what its
/// `filename` and `name_last` templates can name inside its `dirpath`, and nothing else — not another
/// run's files in a nested directory, nor a path with `..` (a path read from a checkpoint may come
/// from another machine, or be hostile).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnNames {
    filename: NamePattern,
    last: NamePattern,
}

impl OwnNames {
    /// The names of a callback with settings `cfg`.
    pub fn new(cfg: &CheckpointConfig) -> Self {
        Self {
            filename: NamePattern::new(cfg, &cfg.filename),
            last: NamePattern::new(cfg, &cfg.name_last),
        }
    }

    fn both(&self) -> [&NamePattern; 2] {
        [&self.filename, &self.last]
    }

    /// Whether `path` is a file one of the templates can name inside `dir`, judged on the text of the
    /// paths (the caller resolves symlinks before deleting).
    pub fn contains(&self, path: &Path, dir: &Path) -> bool {
        relative(path, dir).is_some_and(|rel| self.both().iter().any(|p| p.file(&rel)))
    }

    /// Whether `path` is a file the `name_last` template can name inside `dir`.
    pub fn is_last(&self, path: &Path, dir: &Path) -> bool {
        relative(path, dir).is_some_and(|rel| self.last.file(&rel))
    }

    /// Whether the templates write files in the directory `rel` below `dirpath` (empty: `dirpath`).
    pub fn dir(&self, rel: &[&str]) -> bool {
        self.both().iter().any(|p| p.dir(rel))
    }

    /// Whether `rel` below `dirpath` may lead to a directory where the templates write.
    pub fn leads_to(&self, rel: &[&str]) -> bool {
        self.both().iter().any(|p| p.leads_to(rel))
    }
}

/// The components of `path` below `dir`, when all of them are plain names.
fn relative<'p>(path: &'p Path, dir: &Path) -> Option<Vec<&'p str>> {
    path.strip_prefix(dir)
        .ok()?
        .components()
        .map(|c| match c {
            std::path::Component::Normal(name) => name.to_str(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::config::ModelCheckpointBuilder;
    use super::*;

    #[test]
    fn a_name_pattern_follows_the_template_its_settings_and_its_directories() {
        let cfg = |b: ModelCheckpointBuilder| b.config().unwrap();
        let p = |c: &CheckpointConfig, t: &str| {
            NamePattern::new(c, &FilenameTemplate::parse(t).unwrap())
        };
        let default = cfg(ModelCheckpointBuilder::default());
        let f = |pat: &NamePattern, rel: &str| pat.file(&rel.split('/').collect::<Vec<_>>());

        let topk = p(&default, "{epoch}-{val/loss:.2f}");
        assert!(f(&topk, "epoch=3-val_loss=0.25.ckpt"));
        assert!(f(&topk, "epoch=3-val_loss=0.25-v12.ckpt"));
        assert!(f(&topk, "epoch=3-val_loss=-inf.ckpt"));
        for not in [
            "epoch=3-val_loss=0.25",
            "epoch=3-val/loss=0.25.ckpt",
            "epoch=-val_loss=0.25.ckpt",
            "step=3-val_loss=0.25.ckpt",
            "x/epoch=3-val_loss=0.25.ckpt",
            "epoch=3-val_loss=0.25-vx.ckpt.tmp",
        ] {
            assert!(!f(&topk, not), "{not}");
        }
        assert!(topk.dir(&[]) && !topk.dir(&["sub"]) && !topk.leads_to(&["sub"]));

        let nested = p(&default, "runs/{epoch}/model");
        assert!(f(&nested, "runs/epoch=2/model.ckpt"));
        assert!(f(&nested, "runs/epoch=2/model-v1.ckpt"));
        assert!(!f(&nested, "runs/other/model.ckpt"));
        assert!(!f(&nested, "epoch=2/model.ckpt"));
        assert!(nested.leads_to(&["runs"]) && !nested.dir(&["runs"]));
        assert!(nested.dir(&["runs", "epoch=2"]) && !nested.leads_to(&["other"]));

        let plain = cfg(ModelCheckpointBuilder::default()
            .auto_insert_metric_name(false)
            .join_char("_")
            .file_extension(".pt"));
        let pat = p(&plain, "{epoch}{{x}}");
        assert!(f(&pat, "3{x}.pt") && f(&pat, "3{x}_v1.pt"));
        assert!(!f(&pat, "{x}.pt") && !f(&pat, "3{x}-v1.pt"));
    }
}
