//! The guide in `book/`: every chapter is listed in `SUMMARY.md` and doctested through `src/lib.rs`,
//! every relative link and anchor resolves (mdBook's anchor rule), the compile errors it quotes from
//! `ui-tests/` are the ones the ui tests expect, and every rule the repository's code cites (`B.10`,
//! `S059`, `(guide: Reference, D)`, a test named `s059_…`) has a heading in its Reference chapter; the
//! DSL chapter's `#[checkpoint]` and `#[early_stopping]` tables name exactly the arguments of the shared
//! tables. Prints
//! the Rust code blocks per chapter with `cargo test --test book -- --nocapture`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn src() -> PathBuf {
    root().join("book/src")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every `.md` file of `book/src`, by file name.
fn chapters() -> BTreeMap<String, String> {
    let dir = src();
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            let name = p
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name, read(&p))
        })
        .collect()
}

/// A fenced code block: its info string (`rust,no_run`), its lines, and the line its fence opens on.
struct Block {
    info: String,
    body: Vec<String>,
    line: usize,
}

/// Splits a chapter into prose lines (with their line numbers) and fenced code blocks.
fn parse(text: &str) -> (Vec<(usize, String)>, Vec<Block>) {
    let mut prose = Vec::new();
    let mut blocks = Vec::new();
    let mut open: Option<(String, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence = ["```", "~~~"].into_iter().find(|f| trimmed.starts_with(f));
        match (&mut open, fence) {
            (None, Some(f)) => {
                let marker: String = trimmed.chars().take_while(|c| f.starts_with(*c)).collect();
                let info = trimmed[marker.len()..].trim().to_string();
                let block = Block {
                    info,
                    body: Vec::new(),
                    line: i + 1,
                };
                open = Some((marker, block));
            }
            (Some((marker, _)), Some(_)) if trimmed.trim_end() == marker.as_str() => {
                if let Some((_, block)) = open.take() {
                    blocks.push(block);
                }
            }
            (Some((_, block)), _) => block.body.push(line.to_string()),
            (None, None) => prose.push((i + 1, line.to_string())),
        }
    }
    if let Some((_, block)) = open {
        panic!("a code block opened on line {} is never closed", block.line);
    }
    (prose, blocks)
}

fn attrs(info: &str) -> impl Iterator<Item = &str> {
    info.split([',', ' ', '\t']).filter(|a| !a.is_empty())
}

fn has_attr(info: &str, attr: &str) -> bool {
    attrs(info).any(|a| a == attr)
}

/// What rustdoc compiles as Rust: a block marked `rust`, one with no language (`ignore` and the like
/// alone), or one with no info string at all.
fn is_rust(info: &str) -> bool {
    const RUSTDOC: &[&str] = &[
        "ignore",
        "no_run",
        "compile_fail",
        "should_panic",
        "test_harness",
        "standalone_crate",
    ];
    has_attr(info, "rust")
        || attrs(info)
            .all(|a| RUSTDOC.contains(&a) || a.starts_with("edition") || a.starts_with("ignore-"))
}

/// Inline code spans blanked out, so that a `[x](y)` inside backticks is not read as a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(c);
        } else if in_code {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// The targets of the inline links of a line: `[text](target)` or `[text](target "title")`.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(['<', '>']).to_string());
        rest = &after[end..];
    }
    targets
}

/// The text of a heading as mdBook renders it: code spans, emphasis and link targets dropped.
fn heading_text(raw: &str) -> String {
    let mut text = String::new();
    let mut rest = raw;
    while let Some(at) = rest.find("](") {
        text.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        rest = after.find(')').map_or("", |end| &after[end + 1..]);
    }
    text.push_str(rest);
    text.replace(['`', '*', '['], "")
}

/// mdBook's anchor rule (`normalize_id`): alphanumerics, `-` and `_` kept and lowercased, whitespace
/// becomes `-`, everything else is dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_lowercase().collect::<String>())
            } else if c.is_whitespace() {
                Some("-".to_string())
            } else {
                None
            }
        })
        .collect()
}

/// The anchors of a chapter's headings, with mdBook's `-1`, `-2`, … for repeated ones.
fn anchors(text: &str) -> Vec<String> {
    let (prose, _) = parse(text);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (_, line) in prose {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let id = anchor(&heading_text(line[hashes..].trim_end_matches('#')));
        let n = seen.entry(id.clone()).or_insert(0);
        out.push(if *n == 0 {
            id.clone()
        } else {
            format!("{id}-{n}")
        });
        *n += 1;
    }
    out
}

/// The chapters `SUMMARY.md` links to, in order.
fn summary() -> Vec<String> {
    let text = read(&src().join("SUMMARY.md"));
    let (prose, _) = parse(&text);
    prose
        .iter()
        .flat_map(|(_, line)| link_targets(line))
        .map(|t| t.trim_start_matches("./").to_string())
        .collect()
}

fn fail_if_any(problems: Vec<String>, what: &str) {
    if !problems.is_empty() {
        panic!("{what}:\n  {}", problems.join("\n  "));
    }
}

#[test]
fn summary_lists_every_chapter_and_every_listed_chapter_exists() {
    let listed = summary();
    let chapters = chapters();
    let mut problems = Vec::new();
    for name in &listed {
        if !chapters.contains_key(name) {
            problems.push(format!(
                "book/src/SUMMARY.md lists `{name}`, which does not exist in book/src"
            ));
        }
    }
    for name in chapters.keys().filter(|n| *n != "SUMMARY.md") {
        if !listed.contains(name) {
            problems.push(format!(
                "book/src/{name} is not listed in book/src/SUMMARY.md, so mdBook never renders it"
            ));
        }
    }
    fail_if_any(problems, "the book's table of contents is out of date");
}

#[test]
fn every_chapter_is_doctested_through_the_guide_module() {
    let lib = read(&root().join("src/lib.rs"));
    let guide = lib
        .find("mod guide")
        .map(|at| &lib[at..])
        .unwrap_or_else(|| panic!("src/lib.rs has no `mod guide` including the book's chapters"));
    let mut problems = Vec::new();
    for name in chapters().keys().filter(|n| *n != "SUMMARY.md") {
        let include = format!("include_str!(\"../book/src/{name}\")");
        if !guide.contains(&include) {
            problems.push(format!(
                "book/src/{name} is not included in src/lib.rs's `guide` module \
                 (`#[doc = {include}]`), so its code is never compiled"
            ));
        }
    }
    fail_if_any(problems, "chapters whose code is not doctested");
}

#[test]
fn relative_links_and_anchors_resolve() {
    let chapters = chapters();
    let anchors: BTreeMap<&str, Vec<String>> = chapters
        .iter()
        .map(|(name, text)| (name.as_str(), anchors(text)))
        .collect();
    let mut problems = Vec::new();
    for (name, text) in &chapters {
        let (prose, _) = parse(text);
        for (line_no, line) in &prose {
            for target in link_targets(line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, fragment) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let file = file.trim_start_matches("./");
                let at = format!("book/src/{name}:{line_no}: link `{target}`");
                let in_file = if file.is_empty() { name.as_str() } else { file };
                if !file.is_empty() && !src().join(file).exists() {
                    problems.push(format!("{at}: `{file}` does not exist in book/src"));
                    continue;
                }
                if let Some(fragment) = fragment {
                    match anchors.get(in_file) {
                        Some(known) if known.iter().any(|a| a == fragment) => {}
                        Some(known) => problems.push(format!(
                            "{at}: `{in_file}` has no heading with the anchor `#{fragment}` \
                             (its anchors: {})",
                            known.join(", ")
                        )),
                        None => problems.push(format!(
                            "{at}: an anchor into `{in_file}`, which is not a chapter"
                        )),
                    }
                }
            }
        }
    }
    fail_if_any(problems, "broken links in the book");
}

/// Lines of a code block as rustdoc compiles them: `# hidden` lines shown.
fn unhidden(body: &[String]) -> Vec<String> {
    body.iter()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if t == "#" {
                String::new()
            } else if let Some(rest) = t.strip_prefix("# ") {
                format!("{indent}{rest}")
            } else {
                l.clone()
            }
        })
        .collect()
}

fn normalized(lines: &[String]) -> String {
    let text: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
    text.join("\n").trim().to_string()
}

/// A `text` block quoting `--> ui-tests/NAME.rs:…` is that case's `.stderr`, and the `rust,compile_fail`
/// block before it is that case's source: the guide shows what the macros really print.
#[test]
fn quoted_compile_errors_match_the_ui_tests() {
    let mut problems = Vec::new();
    let mut quoted = 0;
    for (name, text) in chapters() {
        let (_, blocks) = parse(&text);
        for (i, block) in blocks.iter().enumerate() {
            let Some(case) = block.body.iter().find_map(|l| {
                let at = l.find("--> ui-tests/")?;
                let file = &l[at + "--> ".len()..];
                Some(file.split(".rs:").next()?.to_string())
            }) else {
                continue;
            };
            quoted += 1;
            let at = format!("book/src/{name}:{}", block.line);
            let stderr_path = root().join(format!("{case}.stderr"));
            let Ok(stderr) = fs::read_to_string(&stderr_path) else {
                problems.push(format!("{at}: quotes `{case}.rs`, which has no `.stderr`"));
                continue;
            };
            let expected: Vec<String> = stderr.lines().map(String::from).collect();
            if normalized(&block.body) != normalized(&expected) {
                problems.push(format!(
                    "{at}: the error text differs from {case}.stderr; copy it from there:\n{}",
                    stderr.trim_end()
                ));
            }
            let source = fs::read_to_string(root().join(format!("{case}.rs"))).unwrap_or_default();
            let source: Vec<String> = source.lines().map(String::from).collect();
            match i.checked_sub(1).map(|j| &blocks[j]) {
                Some(prev) if has_attr(&prev.info, "compile_fail") => {
                    if normalized(&unhidden(&prev.body)) != normalized(&source) {
                        problems.push(format!(
                            "book/src/{name}:{}: this `compile_fail` block differs from {case}.rs, \
                             whose error the next block quotes",
                            prev.line
                        ));
                    }
                }
                _ => problems.push(format!(
                    "{at}: quotes {case}.rs but does not follow a `rust,compile_fail` block of it"
                )),
            }
        }
    }
    fail_if_any(
        problems,
        "the guide quotes compile errors the macros no longer print",
    );
    assert!(
        quoted > 0,
        "no chapter quotes a ui test any more; this test checks nothing"
    );
}

/// Rust code blocks per chapter: how many rustdoc compiles (all but `ignore`) and how many it also runs
/// (not `no_run`, not `compile_fail`).
#[test]
fn rust_code_blocks_per_chapter() {
    let mut report = String::new();
    let mut totals = [0usize; 4];
    let _ = writeln!(
        report,
        "{:<28} {:>6} {:>9} {:>4} {:>13}",
        "chapter", "rust", "doctests", "run", "compile_fail"
    );
    for name in summary() {
        let Some(text) = chapters().remove(&name) else {
            continue;
        };
        let (_, blocks) = parse(&text);
        let rust: Vec<&Block> = blocks.iter().filter(|b| is_rust(&b.info)).collect();
        let doctests = rust.iter().filter(|b| !has_attr(&b.info, "ignore")).count();
        let compile_fail = rust
            .iter()
            .filter(|b| has_attr(&b.info, "compile_fail"))
            .count();
        let run = rust
            .iter()
            .filter(|b| {
                !["ignore", "no_run", "compile_fail"]
                    .iter()
                    .any(|a| has_attr(&b.info, a))
            })
            .count();
        let row = [rust.len(), doctests, run, compile_fail];
        for (t, n) in totals.iter_mut().zip(row) {
            *t += n;
        }
        let _ = writeln!(
            report,
            "{name:<28} {:>6} {:>9} {:>4} {:>13}",
            row[0], row[1], row[2], row[3]
        );
    }
    let _ = writeln!(
        report,
        "{:<28} {:>6} {:>9} {:>4} {:>13}",
        "total", totals[0], totals[1], totals[2], totals[3]
    );
    println!("{report}");
    assert!(totals[1] > 0, "the book has no doctests");
}

/// The sections and scenarios of the Reference chapter, as its headings name them: `A` (from
/// `## A. Settings`), `B.10` (from `### B.10 Deletion safety`), `S059` (from `### S059`).
fn reference_sections() -> Vec<String> {
    let (prose, _) = parse(&read(&src().join("reference.md")));
    prose
        .iter()
        .filter_map(|(_, line)| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            let title = line[hashes..].strip_prefix(' ')?;
            let first = title.split_whitespace().next()?;
            (hashes > 1).then(|| first.trim_end_matches('.').to_string())
        })
        .collect()
}

/// A section letter (`D`), a numbered section (`B.10`) or a scenario (`S059`).
fn is_section_code(code: &str) -> bool {
    let letter = |c: char| ('A'..='G').contains(&c);
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    match code.split_once('.') {
        Some((l, n)) => l.len() == 1 && l.chars().all(letter) && digits(n),
        None => {
            (code.len() == 1 && code.chars().all(letter))
                || code
                    .strip_prefix('S')
                    .is_some_and(|n| n.len() == 3 && digits(n))
        }
    }
}

/// The rules a source text cites, with their line numbers, as the Reference's headings name them:
/// - `B.10`, `G.3`, `S059` anywhere (comments, strings, docs);
/// - whole sections: `(guide: Reference, D)`, or "section D";
/// - the short codes in function names: `s059_…` is `S059`, `…_changed_by_g4_…` is `G.4`.
fn citations(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut cite = |code: String| found.push((i + 1, code));
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .map(|w| w.trim_end_matches('.'))
            .filter(|w| !w.is_empty())
            .collect();
        for (j, word) in words.iter().enumerate() {
            if word.len() > 1 && is_section_code(word) {
                cite(word.to_string());
            }
            if *word == "section" {
                if let Some(next) = words
                    .get(j + 1)
                    .filter(|w| w.len() == 1 && is_section_code(w))
                {
                    cite(next.to_string());
                }
            }
            if j > 0 && words[j - 1] == "fn" {
                for part in word.split('_') {
                    let mut chars = part.chars();
                    let (head, number) = (chars.next(), chars.as_str());
                    let numbered = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
                    match head {
                        Some('s') if number.len() == 3 && numbered => cite(format!("S{number}")),
                        Some(h @ ('a' | 'b' | 'c' | 'e' | 'g')) if numbered => {
                            cite(format!("{}.{number}", h.to_ascii_uppercase()))
                        }
                        _ => {}
                    }
                }
            }
        }
        const GUIDE: &str = "(guide: Reference, ";
        let mut rest = line;
        while let Some(at) = rest.find(GUIDE) {
            let after = &rest[at + GUIDE.len()..];
            let end = after.find(')').unwrap_or(after.len());
            // Numbered sections and scenarios were found above; whole sections here.
            for item in after[..end]
                .split([',', ';'])
                .flat_map(|s| s.split(" and "))
            {
                let item = item.trim();
                if item.len() == 1 && is_section_code(item) {
                    cite(item.to_string());
                }
            }
            rest = &after[end..];
        }
    }
    found
}

/// Every `.rs` file under `dir`, build output and hidden directories left out.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type().expect("a file type");
        if kind.is_dir() && !name.starts_with('.') && name != "target" {
            rust_files(&entry.path(), out);
        } else if kind.is_file() && name.ends_with(".rs") {
            out.push(entry.path());
        }
    }
}

/// The citations in `text` that name no section of the Reference, as `FILE:LINE: …` lines.
fn unresolved(file: &str, text: &str, sections: &[String]) -> Vec<String> {
    citations(text)
        .into_iter()
        .filter(|(_, code)| !sections.contains(code))
        .map(|(line, code)| {
            format!("{file}:{line}: cites `{code}`, which has no heading in book/src/reference.md")
        })
        .collect()
}

/// Every citation in the repository's Rust files (the crates' sources, tests, examples, benches, fuzz
/// targets, ui cases) names a section or scenario that the guide's Reference chapter has: a reader can
/// open what the code cites (STYLE.md, item 22).
#[test]
fn every_citation_in_the_code_has_a_heading_in_the_reference() {
    let sections = reference_sections();
    let mut files = Vec::new();
    rust_files(root(), &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut cited = 0;
    for path in &files {
        let text = read(path);
        let name = path
            .strip_prefix(root())
            .unwrap_or(path)
            .display()
            .to_string();
        cited += citations(&text).len();
        problems.extend(unresolved(&name, &text, &sections));
    }
    println!("{cited} citations in {} Rust files", files.len());
    fail_if_any(
        problems,
        "citations of rules the Reference chapter does not have",
    );
    for scanned in ["tests/book.rs", "runtime/src/lib.rs", "macros/src/lib.rs"] {
        assert!(
            files.contains(&root().join(scanned)),
            "{scanned} was not scanned: the walk misses files"
        );
    }
    assert!(cited > 0, "no citation found in {} files", files.len());
}

/// The scanner finds each form of citation, and reports one that names a missing section.
#[test]
fn the_citation_scanner_reads_every_form_and_reports_a_missing_section() {
    let text = "\
// Deletes nothing outside (guide: Reference, B.10); see G.3 and S059.
//! The scenarios (guide: Reference, D and C.4), as in section E.
fn s059_s060_changed_by_g1_fails(as_f32: u32, e2e: u8) {}
";
    let found = citations(text);
    let found: Vec<(usize, &str)> = found
        .iter()
        .map(|(line, code)| (*line, code.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (1, "B.10"),
            (1, "G.3"),
            (1, "S059"),
            (2, "C.4"),
            (2, "E"),
            (2, "D"),
            (3, "S059"),
            (3, "S060"),
            (3, "G.1"),
        ]
    );
    let sections = reference_sections();
    assert!(unresolved("x.rs", text, &sections).is_empty());
    // Built here, so that this file cites no missing section itself.
    let (b99, s999, s998) = (
        format!("B.{}", 99),
        format!("S{}", 999),
        format!("S{}", 998),
    );
    let missing = format!(
        "// (guide: Reference, {b99}) and {s999}\nfn {}_x() {{}}",
        s998.to_lowercase()
    );
    let expected: Vec<String> = [(1, &b99), (1, &s999), (2, &s998)]
        .into_iter()
        .map(|(line, code)| {
            format!("x.rs:{line}: cites `{code}`, which has no heading in book/src/reference.md")
        })
        .collect();
    assert_eq!(unresolved("x.rs", &missing, &sections), expected);
}

/// The arguments of the DSL chapter's table below `heading`: the code spans of its first column.
fn documented_arguments(dsl: &str, heading: &str) -> Vec<String> {
    let mut rows = dsl
        .lines()
        .skip_while(|l| *l != heading)
        .skip_while(|l| !l.starts_with("| argument | value |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    let mut found = Vec::new();
    for row in rows.by_ref() {
        let first = row.split('|').nth(1).unwrap_or("");
        found.extend(first.split('`').skip(1).step_by(2).map(str::to_string));
    }
    found
}

/// The problems of the table below `heading` against the shared table of the attribute `name`.
fn table_problems(heading: &str, name: &str, keys: &[&str]) -> Vec<String> {
    let documented = documented_arguments(&read(&src().join("dsl.md")), heading);
    if documented.is_empty() {
        return vec![format!(
            "no `| argument | value |` table under `{heading}` in dsl.md"
        )];
    }
    let mut problems = Vec::new();
    for key in keys {
        if !documented.iter().any(|d| d == key) {
            problems.push(format!(
                "`#[{name}({key} = …)]` is missing from dsl.md's table"
            ));
        }
    }
    for d in &documented {
        if !keys.contains(&d.as_str()) {
            problems.push(format!(
                "dsl.md's table lists `{d}`, which `#[{name}]` does not take"
            ));
        }
    }
    problems
}

#[test]
fn the_dsl_chapter_lists_exactly_the_checkpoint_arguments() {
    let keys: Vec<&str> = fulgur_rules::checkpoint::keys().collect();
    let problems = table_problems("## `#[checkpoint(...)]`", "checkpoint", &keys);
    fail_if_any(problems, "the DSL chapter's `#[checkpoint]` table");
}

#[test]
fn the_dsl_chapter_lists_exactly_the_early_stopping_arguments() {
    let keys: Vec<&str> = fulgur_rules::early_stopping::ARGUMENTS
        .iter()
        .map(|a| a.key)
        .collect();
    let problems = table_problems("## `#[early_stopping(...)]`", "early_stopping", &keys);
    fail_if_any(problems, "the DSL chapter's `#[early_stopping]` table");
}
