//! Man pages and shell completions, generated from the clap definitions (`s3syncd(1)` and one
//! page per subcommand) and from `docs/spec-reference.md` (`s3syncd.toml(5)`), so neither can
//! drift from what the binary accepts or what the reference says.

use clap::CommandFactory;
use std::path::Path;

/// The spec and config reference, compiled in: the one source of `s3syncd.toml(5)`.
const SPEC_REFERENCE: &str = include_str!("../../docs/spec-reference.md");

/// Writes `s3syncd.1`, `s3syncd-SUB.1` for each subcommand (and sub-subcommand) and
/// `s3syncd.toml.5` into `dir`.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let cmd = super::Cli::command().version(super::VERSION);
    write_page(dir, cmd, "s3syncd", &mut written)?;
    let name = "s3syncd.toml.5";
    std::fs::write(dir.join(name), toml_page(SPEC_REFERENCE))?;
    written.push(name.to_string());
    Ok(written)
}

fn write_page(dir: &Path, cmd: clap::Command, name: &str, written: &mut Vec<String>) -> std::io::Result<()> {
    let cmd = cmd.name(name.to_string());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    let file = format!("{name}.1");
    std::fs::write(dir.join(&file), page)?;
    written.push(file);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_page(dir, sub.clone(), &format!("{name}-{}", sub.get_name()), written)?;
    }
    Ok(())
}

/// Prints the completion script for `shell` to stdout.
pub fn print_completions(shell: clap_complete::Shell) {
    let mut cmd = super::Cli::command();
    clap_complete::generate(shell, &mut cmd, "s3syncd", &mut std::io::stdout());
}

/// `s3syncd.toml(5)`: the spec reference (Markdown: headings, paragraphs, lists, tables, code
/// blocks) rendered as roff. Each table row becomes a tagged paragraph: the key, then its type
/// and default, then what it means.
fn toml_page(md: &str) -> String {
    let mut out = String::from(
        ".TH S3SYNCD.TOML 5 \"\" \"s3syncd\" \"File Formats\"\n.SH NAME\ns3syncd.toml \\- s3syncd configuration and spec files\n",
    );
    let mut header: Vec<String> = Vec::new();
    let mut in_code = false;
    for line in md.lines() {
        if line.starts_with("```") {
            out.push_str(if in_code { ".fi\n" } else { ".PP\n.nf\n" });
            in_code = !in_code;
            continue;
        }
        if in_code {
            out.push_str(&escape(line));
            out.push('\n');
            continue;
        }
        if let Some(h) = line.strip_prefix("# ") {
            out.push_str(&format!(".SH DESCRIPTION\n{}\n", inline(h)));
        } else if let Some(h) = line.strip_prefix("## ") {
            out.push_str(&format!(".SH \"{}\"\n", inline(h).to_uppercase().replace('"', "")));
        } else if let Some(h) = line.strip_prefix("### ") {
            out.push_str(&format!(".SS \"{}\"\n", inline(h).replace('"', "")));
        } else if line.starts_with('|') {
            if line.chars().all(|ch| matches!(ch, '|' | '-' | ':' | ' ')) {
                continue; // the header's underline
            }
            let cells: Vec<String> = line.trim_matches('|').split(" | ").map(|c| inline(c.trim())).collect();
            if header.is_empty() {
                header = cells;
                continue;
            }
            out.push_str(&format!(".TP\n{}\n", cells[0]));
            let rest: Vec<String> = header.iter().zip(&cells).skip(1).map(|(h, c)| format!("{h}: {c}")).collect();
            out.push_str(&rest.join("\n.br\n"));
            out.push('\n');
        } else if line.trim().is_empty() {
            header.clear();
            out.push_str(".PP\n");
        } else if let Some(item) = line.strip_prefix("- ") {
            out.push_str(&format!(".IP \\(bu 2\n{}\n", inline(item)));
        } else {
            out.push_str(&inline(line));
            out.push('\n');
        }
    }
    out.push_str(".SH SEE ALSO\n\\fBs3syncd\\fR(1), \\fBs3syncd-run\\fR(1), \\fBs3syncd-daemon\\fR(1), \\fBs3syncd-validate\\fR(1)\n");
    out
}

/// Markdown inline text as roff: `code` bold, links as their text, roff specials escaped.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    let text = strip_links(s).replace("\\|", "|");
    for ch in escape(&text).chars() {
        match ch {
            '`' => {
                out.push_str(if code { "\\fR" } else { "\\fB" });
                code = !code;
            }
            _ => out.push(ch),
        }
    }
    if code {
        out.push_str("\\fR");
    }
    out.replace("**", "")
}

/// `[text](target)` becomes `text`.
fn strip_links(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Backslashes, and a leading `.` or `'` (a roff request), made literal.
fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_spec_reference_is_in_the_man_page() {
        let page = toml_page(SPEC_REFERENCE);
        for key in [
            "spec_dir",
            "max_transfers",
            "copy_threshold",
            "preserve_tags",
            "checksum_sidecar",
            "storage_class",
        ] {
            assert!(page.contains(&format!(".TP\n\\fB{key}\\fR\n")), "{key} missing");
        }
        assert!(page.contains(".SS \"\\fB[transfer]\\fR\""), "sections become subsections");
        assert!(!page.contains("]("), "links are flattened");
        assert_eq!(inline("a `b` [c](d.md) e"), "a \\fBb\\fR c e");
        assert_eq!(inline("`x` \\| `y`"), "\\fBx\\fR | \\fBy\\fR");
        assert!(!page.contains("---|"), "table underlines are dropped");
    }
}
