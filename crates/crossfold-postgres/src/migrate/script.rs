//! A migration file's text as PostgreSQL's lexer reads it: where its statements end, and the
//! form its checksum covers.
//!
//! Semicolons, comment markers and quotes mean nothing inside a string literal (`'...'` with
//! `''` for a quote, `E'...'` with backslash escapes as well), a quoted identifier (`"..."`), a
//! dollar-quoted string (`$$...$$`, `$fn$...$fn$`, whose body ends only at the same tag) or a
//! comment (`-- ...` to the end of the line, `/* ... */`, which nest); outside them a
//! semicolon ends a statement.

/// One piece of SQL text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    /// Spaces, tabs and line ends.
    Space,
    /// A comment of either kind.
    Comment,
    /// A string literal or quoted identifier, quotes (and an `E` prefix) included.
    Quoted(&'a str),
    /// A dollar-quoted string: `open` and `close` are its delimiters (`close` is empty when
    /// the text ends before it does), `body` what lies between them.
    Dollar {
        open: &'a str,
        body: &'a str,
        close: &'a str,
    },
    /// `;`
    Semicolon,
    /// Any other character.
    Code(&'a str),
}

/// The tokens of `sql`, in order. Text that ends inside a literal or comment ends it.
struct Tokens<'a> {
    rest: &'a str,
    /// Whether the previous token was a character that continues an identifier, so that a `$`
    /// or `E'` here is part of it (`a$b`, `$1`, `typE'...'`) and does not open a string.
    after_identifier: bool,
}

fn tokens(sql: &str) -> Tokens<'_> {
    Tokens {
        rest: sql,
        after_identifier: false,
    }
}

/// Characters that may continue an identifier (PostgreSQL's `ident_cont`: letters, digits,
/// `_`, `$` and every non-ASCII character).
fn continues_identifier(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

/// Characters that may start a dollar quote's tag (`ident_start`, without `$`).
fn starts_tag(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

/// The length of the quoted text at the start of `text` (which starts with the quote
/// character `quote`, after any prefix of `prefix` bytes), its closing quote included. A
/// doubled quote is part of the text; with `backslash`, so is any character after a `\`.
fn quoted_len(text: &str, prefix: usize, quote: u8, backslash: bool) -> usize {
    let bytes = text.as_bytes();
    let mut i = prefix + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash => i += 2,
            c if c == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    // Unterminated: the rest of the text.
    text.len()
}

/// The length of the block comment at the start of `text`, nested comments included.
fn block_comment_len(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    text.len()
}

/// The dollar-quote delimiter (`$$`, `$tag$`) at the start of `text`, if there is one.
fn dollar_delimiter(text: &str) -> Option<&str> {
    let tag = text.strip_prefix('$')?;
    let end = tag.find('$')?;
    let mut chars = tag[..end].chars();
    let valid = chars.next().is_none_or(starts_tag) && chars.all(continues_identifier);
    valid.then(|| &text[..end + 2])
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let text = self.rest;
        let bytes = text.as_bytes();
        let first = text.chars().next()?;
        let second = bytes.get(1).copied();
        let after_identifier = std::mem::replace(&mut self.after_identifier, false);
        if first == '$'
            && !after_identifier
            && let Some(open) = dollar_delimiter(text)
        {
            let after = &text[open.len()..];
            let (body, close) = match after.find(open) {
                Some(end) => (&after[..end], open),
                None => (after, ""),
            };
            self.rest = &after[body.len() + close.len()..];
            return Some(Token::Dollar { open, body, close });
        }
        let (token, len) = match first {
            c if c.is_ascii_whitespace() => {
                let len = text
                    .find(|c: char| !c.is_ascii_whitespace())
                    .unwrap_or(text.len());
                (Token::Space, len)
            }
            '-' if second == Some(b'-') => (Token::Comment, text.find('\n').unwrap_or(text.len())),
            '/' if second == Some(b'*') => (Token::Comment, block_comment_len(text)),
            '\'' => {
                let len = quoted_len(text, 0, b'\'', false);
                (Token::Quoted(&text[..len]), len)
            }
            '"' => {
                let len = quoted_len(text, 0, b'"', false);
                (Token::Quoted(&text[..len]), len)
            }
            'e' | 'E' if second == Some(b'\'') && !after_identifier => {
                let len = quoted_len(text, 1, b'\'', true);
                (Token::Quoted(&text[..len]), len)
            }
            ';' => (Token::Semicolon, 1),
            c => {
                self.after_identifier = continues_identifier(c);
                (Token::Code(&text[..c.len_utf8()]), c.len_utf8())
            }
        };
        self.rest = &text[len..];
        Some(token)
    }
}

/// Text with whitespace runs (and comments) collapsed to one space, none at either end.
#[derive(Default)]
struct Collapsed {
    text: String,
    gap: bool,
}

impl Collapsed {
    fn gap(&mut self) {
        self.gap = true;
    }

    fn push(&mut self, piece: &str) {
        if self.gap && !self.text.is_empty() {
            self.text.push(' ');
        }
        self.gap = false;
        self.text.push_str(piece);
    }

    /// Appends the canonical form of `sql`.
    fn push_canonical(&mut self, sql: &str) {
        for token in tokens(sql) {
            match token {
                Token::Space | Token::Comment => self.gap(),
                Token::Quoted(text) | Token::Code(text) => self.push(text),
                Token::Semicolon => self.push(";"),
                // A body is code (a function's, a DO block's): its comments and layout do not
                // count either, which is also how builds before this lexer saw it, so the
                // checksums they recorded still match.
                Token::Dollar { open, body, close } => {
                    self.push(open);
                    self.push_canonical(body);
                    self.push(close);
                }
            }
        }
    }
}

/// The SQL as its checksum sees it: comments removed and whitespace collapsed, so neither a
/// reworded comment nor a CRLF checkout changes it. String literals and quoted identifiers are
/// kept as they are; the bodies of dollar-quoted strings are read as SQL in turn.
pub(crate) fn canonical(sql: &str) -> String {
    let mut out = Collapsed::default();
    out.push_canonical(sql);
    out.text
}

/// The statements of a migration that runs outside a transaction, split at each `;` outside
/// literals, comments and parentheses (as psql does, for `CREATE RULE ... DO (a; b)`), without
/// comments and with whitespace collapsed outside literals; a last statement needs no `;`.
/// SQL-standard function bodies (`BEGIN ATOMIC ... END`) are not understood: such a function
/// goes in a dollar-quoted body or in a migration that runs in a transaction (sent whole).
pub(crate) fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = Collapsed::default();
    let mut depth = 0usize;
    for token in tokens(sql) {
        match token {
            Token::Space | Token::Comment => current.gap(),
            Token::Semicolon if depth == 0 => {
                let statement = std::mem::take(&mut current).text;
                if !statement.is_empty() {
                    out.push(statement);
                }
            }
            Token::Semicolon => current.push(";"),
            Token::Quoted(text) => current.push(text),
            Token::Dollar { open, body, close } => {
                current.push(open);
                current.text.push_str(body);
                current.text.push_str(close);
            }
            Token::Code(text) => {
                match text {
                    "(" => depth += 1,
                    ")" => depth = depth.saturating_sub(1),
                    _ => {}
                }
                current.push(text);
            }
        }
    }
    if !current.text.is_empty() {
        out.push(current.text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_line_endings_do_not_count() {
        let shipped = "-- A comment.\nCREATE TABLE t (a int); -- why\n/* block /* nested */ */\nSELECT '--kept'  , \"x  y\";\n";
        let edited = "-- A reworded comment.\r\nCREATE TABLE t (a int);\r\n\r\nSELECT '--kept' , \"x  y\"; -- new\r\n";
        assert_eq!(canonical(shipped), canonical(edited));
        assert_eq!(
            canonical(shipped),
            "CREATE TABLE t (a int); SELECT '--kept' , \"x  y\";"
        );
        assert_ne!(canonical("SELECT 'a  b'"), canonical("SELECT 'a b'"));
        assert_ne!(canonical("SELECT 1"), canonical("SELECT 2"));
    }

    #[test]
    fn a_dollar_quoted_body_is_canonical_inside_its_delimiters() {
        let sql = "CREATE FUNCTION f() RETURNS int AS $fn$\n  -- why; it's so\n  SELECT 1; /* ; */\n$fn$ LANGUAGE sql;";
        assert_eq!(
            canonical(sql),
            "CREATE FUNCTION f() RETURNS int AS $fn$ SELECT 1; $fn$ LANGUAGE sql;"
        );
    }

    #[test]
    fn backslash_escapes_count_only_in_e_strings() {
        assert_eq!(
            canonical("SELECT E'it\\'s  -- here' -- gone\n, 1"),
            "SELECT E'it\\'s  -- here' , 1"
        );
        // In a standard string a backslash is a character; the quote after it closes it.
        assert_eq!(canonical("SELECT 'a\\' -- gone\n"), "SELECT 'a\\'");
        // An identifier ending in e is not an E prefix.
        assert_eq!(canonical("SELECT typE'a\\' -- gone\n"), "SELECT typE'a\\'");
    }

    #[test]
    fn a_no_transaction_migration_splits_into_its_statements() {
        let sql = "-- crossfold:no-transaction\n-- Why; with a semicolon.\nDROP INDEX CONCURRENTLY IF EXISTS a;\nCREATE INDEX CONCURRENTLY a ON t (split_part(s, ';', 1));\n";
        assert_eq!(
            statements(sql),
            [
                "DROP INDEX CONCURRENTLY IF EXISTS a",
                "CREATE INDEX CONCURRENTLY a ON t (split_part(s, ';', 1))"
            ]
        );
    }

    #[test]
    fn semicolons_inside_literals_bodies_and_comments_do_not_split() {
        let sql = "\
CREATE FUNCTION f() RETURNS void AS $$
BEGIN
    PERFORM 1;  -- two  spaces kept in the body
END
$$ LANGUAGE plpgsql;
CREATE FUNCTION g() RETURNS text AS $fn$ SELECT $$;$$ || $q$ a; b $q$ $fn$ LANGUAGE sql;
SELECT E'it\\'s; here';
SELECT 'a;''b';
SELECT \"odd;\"\"name\" FROM t; -- a comment; with a semicolon
/* a comment; /* nested; */ still; */ SELECT 1;
CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2);
SELECT $1, a$b$ FROM t;
SELECT 'last' -- no semicolon at the end";
        assert_eq!(
            statements(sql),
            [
                "CREATE FUNCTION f() RETURNS void AS $$\nBEGIN\n    PERFORM 1;  -- two  spaces kept in the body\nEND\n$$ LANGUAGE plpgsql",
                "CREATE FUNCTION g() RETURNS text AS $fn$ SELECT $$;$$ || $q$ a; b $q$ $fn$ LANGUAGE sql",
                "SELECT E'it\\'s; here'",
                "SELECT 'a;''b'",
                "SELECT \"odd;\"\"name\" FROM t",
                "SELECT 1",
                "CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2)",
                "SELECT $1, a$b$ FROM t",
                "SELECT 'last'",
            ]
        );
    }

    #[test]
    fn text_that_ends_inside_a_literal_or_comment_is_one_statement() {
        assert_eq!(statements("SELECT 'a; b"), ["SELECT 'a; b"]);
        assert_eq!(statements("SELECT $$a; b"), ["SELECT $$a; b"]);
        assert_eq!(statements("SELECT E'\\"), ["SELECT E'\\"]);
        assert_eq!(statements("SELECT 1 /* a; /* b */"), ["SELECT 1"]);
        assert_eq!(statements("SELECT 'é''"), ["SELECT 'é''"]);
        assert!(statements(" ;; -- nothing\n").is_empty());
    }
}
