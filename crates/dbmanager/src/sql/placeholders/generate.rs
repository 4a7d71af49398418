//! Random statements for the rewriting property tests, each with the output its dialect must
//! give: string literals, quoted and bracketed identifiers, line and (nested) block comments,
//! words with `$` inside, numbers, and placeholders, joined by separators. Everything but a
//! placeholder in code must come out unchanged.

use proptest::prelude::*;

/// Whose lexical rules the statement follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    TransactSql,
    MySql,
    Postgres,
    Sqlite,
}

/// A run of statement text, or a placeholder `$n` in code.
#[derive(Debug, Clone)]
pub(crate) enum Frag {
    Text(String),
    Placeholder(u32),
}

/// The number of parameters every generated statement has (`$1` ..= `$PARAMS`).
pub(crate) const PARAMS: u32 = 4;

/// The statement as written.
pub(crate) fn input(frags: &[Frag]) -> String {
    frags
        .iter()
        .map(|f| match f {
            Frag::Text(t) => t.clone(),
            Frag::Placeholder(n) => format!("${n}"),
        })
        .collect()
}

/// The statement with each placeholder replaced by `write(n)`, and the placeholders in order.
pub(crate) fn expected(frags: &[Frag], write: impl Fn(u32) -> String) -> (String, Vec<u32>) {
    let mut order = Vec::new();
    let text = frags
        .iter()
        .map(|f| match f {
            Frag::Text(t) => t.clone(),
            Frag::Placeholder(n) => {
                order.push(*n);
                write(*n)
            }
        })
        .collect();
    (text, order)
}

const TRICKY: &[&str] = &[
    "a", "Z", " ", "  ", "$1", "$2", "$", "$$", "1", "'", "\"", "]", "[", "`", "-", "--", "#",
    "\\", "\n", "?", "@P1", ":a", "@a", "é", "/*", "*/", "*", "/", "!", "E'", "$q$", "\t", "ü$3",
];

/// Text drawn from the tricky pieces, minus those `exclude` rejects.
fn text(exclude: fn(&str) -> bool, max: usize) -> BoxedStrategy<String> {
    let pool: Vec<&'static str> = TRICKY.iter().copied().filter(|s| !exclude(s)).collect();
    proptest::collection::vec(proptest::sample::select(pool), 0..max)
        .prop_map(|v| v.concat())
        .boxed()
}

fn text_frag(s: String) -> Vec<Frag> {
    vec![Frag::Text(s)]
}

/// `'...'`-style literal with the closing character doubled.
fn doubled(open: &'static str, close: char, content: String) -> String {
    let body = content.replace(close, &format!("{close}{close}"));
    format!("{open}{body}{close}")
}

/// A MySQL string: `'` as `''` or `\'`, backslash as `\\`.
fn mysql_string(quote: char, content: &str, backslash_quote: bool) -> String {
    let mut s = String::from(quote);
    for c in content.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            c if c == quote && backslash_quote => {
                s.push('\\');
                s.push(c);
            }
            c if c == quote => {
                s.push(c);
                s.push(c);
            }
            c => s.push(c),
        }
    }
    s.push(quote);
    s
}

fn literal(lang: Lang) -> BoxedStrategy<Vec<Frag>> {
    let content = text(|_| false, 8);
    match lang {
        Lang::TransactSql => prop_oneof![
            content.clone().prop_map(|c| doubled("'", '\'', c)),
            content.clone().prop_map(|c| doubled("N'", '\'', c)),
            content.clone().prop_map(|c| doubled("\"", '"', c)),
            content.prop_map(|c| doubled("[", ']', c)),
        ]
        .prop_map(text_frag)
        .boxed(),
        Lang::MySql => prop_oneof![
            (content.clone(), any::<bool>()).prop_map(|(c, b)| mysql_string('\'', &c, b)),
            (content.clone(), any::<bool>()).prop_map(|(c, b)| mysql_string('"', &c, b)),
            content.prop_map(|c| doubled("`", '`', c)),
        ]
        .prop_map(text_frag)
        .boxed(),
        Lang::Postgres => prop_oneof![
            content.clone().prop_map(|c| doubled("'", '\'', c)),
            content.clone().prop_map(|c| doubled("\"", '"', c)),
            // E'...': backslashes escape, `\'` and `''` both stand for a quote.
            (content.clone(), any::<bool>()).prop_map(|(c, b)| {
                let s = mysql_string('\'', &c, b);
                format!("E{s}")
            }),
            (content, prop_oneof![Just(""), Just("q"), Just("tag_1")]).prop_filter_map(
                "the body holds the delimiter",
                |(c, tag)| {
                    let delimiter = format!("${tag}$");
                    (!c.contains(&delimiter) && !c.ends_with('$'))
                        .then(|| format!("{delimiter}{c}{delimiter}"))
                }
            ),
        ]
        .prop_map(text_frag)
        .boxed(),
        Lang::Sqlite => prop_oneof![
            content.clone().prop_map(|c| doubled("'", '\'', c)),
            content.clone().prop_map(|c| doubled("\"", '"', c)),
            content.prop_map(|c| doubled("`", '`', c)),
            text(|s| s.contains(']'), 8).prop_map(|c| format!("[{c}]")),
        ]
        .prop_map(text_frag)
        .boxed(),
    }
}

fn line_comment(lang: Lang) -> BoxedStrategy<Vec<Frag>> {
    let body = text(|s| s.contains('\n'), 6);
    let dash = body.clone().prop_map(|c| format!("-- {c}\n"));
    if lang == Lang::MySql {
        prop_oneof![dash, body.prop_map(|c| format!("#{c}\n"))]
            .prop_map(text_frag)
            .boxed()
    } else {
        prop_oneof![dash, body.prop_map(|c| format!("--{c}\n"))]
            .prop_map(text_frag)
            .boxed()
    }
}

/// Comment text that can neither open nor close a comment, whatever stands next to it.
fn comment_text(flat: bool) -> BoxedStrategy<String> {
    if flat {
        // In a comment that does not nest, `/*` is only text; pieces side by side must not
        // make a `*/` (`/*` + `/*` holds one).
        text(|s| s.contains("*/") || s == "*" || s == "/", 6)
            .prop_map(|mut t| {
                while t.contains("*/") {
                    t = t.replace("*/", "* /");
                }
                t
            })
            .boxed()
    } else {
        text(|s| s.contains('*') || s.contains('/'), 6)
    }
}

fn block_comment(lang: Lang) -> BoxedStrategy<Vec<Frag>> {
    let nested = matches!(lang, Lang::TransactSql | Lang::Postgres);
    let leaf = comment_text(!nested).prop_map(|t| vec![t]);
    let body = if nested {
        leaf.prop_recursive(3, 12, 3, |inner| {
            (
                proptest::collection::vec(inner, 0..3),
                comment_text(false),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(children, t, slash, star)| {
                    // `/*/` opens without closing; `**/` closes.
                    let mut s = String::from(if slash { "/*/ " } else { "/* " });
                    for c in children {
                        s.push_str(&c.concat());
                        s.push(' ');
                    }
                    s.push_str(&t);
                    s.push_str(if star { " **/" } else { " */" });
                    vec![s]
                })
        })
        .boxed()
    } else {
        leaf.boxed()
    };
    (body, any::<bool>(), any::<bool>())
        .prop_map(|(inner, slash, star)| {
            let open = if slash { "/*/ " } else { "/* " };
            let close = if star { " **/" } else { " */" };
            vec![Frag::Text(format!("{open}{}{close}", inner.concat()))]
        })
        .boxed()
}

fn word(lang: Lang) -> BoxedStrategy<Vec<Frag>> {
    let plain = "[a-dx-z_][a-z0-9_]{0,2}";
    let with_dollar = "[a-dx-z_][a-z0-9_]{0,2}\\$[0-9a-z$]{0,3}";
    let mut options = vec![plain.boxed(), with_dollar.boxed()];
    match lang {
        Lang::TransactSql => {
            options.push("@[a-z]{1,2}\\$[0-9]{1,2}".boxed());
            options.push("#[a-z]{1,2}\\$[0-9]{1,2}".boxed());
            options.push("@@[a-z]{1,4}".boxed());
        }
        Lang::MySql => options.push("[0-9]{1,2}\\$[0-9a-z]{1,2}".boxed()),
        Lang::Postgres | Lang::Sqlite => {}
    }
    proptest::strategy::Union::new(options)
        .prop_map(text_frag)
        .boxed()
}

fn number(lang: Lang) -> BoxedStrategy<Vec<Frag>> {
    let n = prop_oneof![
        Just("7"),
        Just("12"),
        Just("1.5"),
        Just("1e5"),
        Just("2.5E+3")
    ];
    if lang == Lang::TransactSql {
        // A number then `$n` with nothing between: the number ends and a placeholder starts
        // (unrewritten, SQL Server would read `$n` as money).
        prop_oneof![
            n.clone().prop_map(|n| vec![Frag::Text(n.into())]),
            (n, 1..=PARAMS).prop_map(|(n, p)| vec![Frag::Text(n.into()), Frag::Placeholder(p)]),
        ]
        .boxed()
    } else {
        n.prop_map(|n| vec![Frag::Text(n.into())]).boxed()
    }
}

fn placeholder() -> BoxedStrategy<Vec<Frag>> {
    (1..=PARAMS)
        .prop_map(|n| vec![Frag::Placeholder(n)])
        .boxed()
}

/// One piece in code. Inside a MySQL executable comment `/*! ... */` the content is code too.
fn piece(lang: Lang, executable: bool) -> BoxedStrategy<Vec<Frag>> {
    let mut options = vec![
        (3, placeholder()),
        (2, literal(lang)),
        (1, line_comment(lang)),
        (2, block_comment(lang)),
        (2, word(lang)),
        (1, number(lang)),
    ];
    if lang == Lang::MySql && !executable {
        options.push((1, executable_comment()));
    }
    proptest::strategy::Union::new_weighted(options).boxed()
}

/// `/*! ... */` (always runs: placeholders inside are rewritten) or a conditional one,
/// `/*!50001 ... */` or `/*M! ... */`, without placeholders.
fn executable_comment() -> BoxedStrategy<Vec<Frag>> {
    let inner = proptest::collection::vec((piece(Lang::MySql, true), separator(Lang::MySql)), 0..4);
    (
        inner,
        prop_oneof![
            Just("/*! "),
            Just("/*!50001 "),
            Just("/*M! "),
            Just("/*M!100101 ")
        ],
    )
        .prop_map(|(inner, open)| {
            let conditional = open != "/*! ";
            let mut frags = vec![Frag::Text(open.into())];
            for (piece, sep) in inner {
                for f in piece {
                    frags.push(match f {
                        Frag::Placeholder(n) if conditional => Frag::Text(format!("'${n}'")),
                        f => f,
                    });
                }
                frags.push(Frag::Text(sep.into()));
            }
            frags.push(Frag::Text(" */".into()));
            frags
        })
        .boxed()
}

/// Between two pieces. Not `(` on SQLite, which reads `$1(x)` as one Tcl-style name.
fn separator(lang: Lang) -> impl Strategy<Value = &'static str> {
    let mut options = vec![" ", "\n", ", ", " = ", ")", " + ", "\t"];
    if lang != Lang::Sqlite {
        options.push("(");
    }
    proptest::sample::select(options)
}

/// A statement of up to `max` pieces.
pub(crate) fn statement(lang: Lang, max: usize) -> impl Strategy<Value = Vec<Frag>> {
    (
        proptest::collection::vec((piece(lang, false), separator(lang)), 0..max),
        separator(lang),
    )
        .prop_map(|(pieces, first)| {
            let mut frags = vec![Frag::Text(format!("SELECT{first}"))];
            for (piece, sep) in pieces {
                frags.extend(piece);
                frags.push(Frag::Text(sep.into()));
            }
            frags
        })
}
