//! Text from outside the program (a server's error message, a path, a variable's name) as a
//! terminal or a log gets it: control and bidirectional characters escaped (`\u{1b}`), so that
//! nothing a server or a file says can recolour, retitle or rewrite the terminal, split a table
//! row or a log line, or reorder a line.

/// `text` with control and bidirectional characters escaped.
pub fn escaped(text: &str) -> String {
    if !text.chars().any(unprintable) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if unprintable(c) {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped_and_the_rest_kept() {
        assert_eq!(escaped("plain ünï ✓"), "plain ünï ✓");
        assert_eq!(
            escaped("a\x1b[31mb\nc\u{202e}d"),
            "a\\u{1b}[31mb\\u{a}c\\u{202e}d"
        );
    }
}
