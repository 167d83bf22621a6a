//! Database load of a deployment from `pg_stat_statements`: plain functions that turn the
//! view's rows into what is exported, so bounded labels, departed queries and the refusal of
//! literal values are tested without a server.
//!
//! The view's counters are per statement entry and are not monotonic as a whole: entries are
//! evicted when `pg_stat_statements.max` is reached and all of them drop to zero on
//! `pg_stat_statements_reset()`. [`QueryLoad`] therefore adds up per-entry increases, so the
//! exported totals only grow and `rate()` sees no false resets.

use std::collections::HashMap;

/// How many characters of a query's normalised text a label keeps.
pub const MAX_QUERY_CHARS: usize = 100;

/// The label of a query whose normalised text still holds something that may be a literal
/// value (a string, a number, a dollar-quoted body or a comment): the query is still counted,
/// under its `queryid`, but its text never leaves the database.
pub const WITHHELD_QUERY: &str = "(text withheld)";

/// Default number of queries exported per deployment.
pub const DEFAULT_TOP_QUERIES: usize = 10;

/// One row of `pg_stat_statements`, summed over the users and databases that ran it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementRow {
    /// The statement's `queryid`.
    pub queryid: i64,
    /// Times it was executed.
    pub calls: u64,
    /// Total execution time in milliseconds (`total_exec_time`).
    pub total_ms: f64,
    /// The normalised text (constants replaced by `$n`).
    pub query: String,
}

/// One of a deployment's most expensive queries, as labelled.
#[derive(Debug, Clone, PartialEq)]
pub struct TopQuery {
    /// `queryid`, in decimal.
    pub queryid: String,
    /// The normalised text cut to [`MAX_QUERY_CHARS`], or [`WITHHELD_QUERY`].
    pub query: String,
    /// Times it was executed.
    pub calls: u64,
    /// Total execution time.
    pub seconds: f64,
}

/// What one deployment's database exports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatabaseSample {
    /// Deployment (instance name).
    pub deployment: String,
    /// CPU seconds of the server's processes (`None`: not readable, e.g. it just stopped).
    pub cpu_seconds: Option<f64>,
    /// Statements executed since sampling began.
    pub calls: u64,
    /// Execution time of those statements.
    pub query_seconds: f64,
    /// The top queries by total execution time, most expensive first.
    pub top: Vec<TopQuery>,
}

/// Monotonic totals over successive reads of `pg_stat_statements`.
#[derive(Debug, Clone, Default)]
pub struct QueryLoad {
    seen: HashMap<i64, (u64, f64)>,
    calls: u64,
    seconds: f64,
}

impl QueryLoad {
    /// Adds what each entry gained since the last read. An entry that is new, or whose counts
    /// went down (evicted and created again, or reset), counts from zero.
    pub fn update(&mut self, rows: &[StatementRow]) {
        let mut seen = HashMap::with_capacity(rows.len());
        for r in rows {
            let (calls, ms) = match self.seen.get(&r.queryid) {
                Some(&(c, t)) if r.calls >= c && r.total_ms >= t => (r.calls - c, r.total_ms - t),
                _ => (r.calls, r.total_ms),
            };
            self.calls = self.calls.saturating_add(calls);
            self.seconds += ms.max(0.0) / 1000.0;
            seen.insert(r.queryid, (r.calls, r.total_ms));
        }
        self.seen = seen;
    }

    /// Statements executed so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Their execution time so far.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }
}

/// The `n` rows with the most total execution time, labelled (ties by `queryid`, so the set
/// is stable between samples).
pub fn top_queries(rows: &[StatementRow], n: usize) -> Vec<TopQuery> {
    let mut sorted: Vec<&StatementRow> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        b.total_ms
            .total_cmp(&a.total_ms)
            .then(a.queryid.cmp(&b.queryid))
    });
    sorted
        .into_iter()
        .take(n)
        .map(|r| TopQuery {
            queryid: r.queryid.to_string(),
            query: query_label(&r.query),
            calls: r.calls,
            seconds: r.total_ms.max(0.0) / 1000.0,
        })
        .collect()
}

/// The label value of a normalised query text: whitespace runs collapsed to one space and cut
/// to [`MAX_QUERY_CHARS`] characters, or [`WITHHELD_QUERY`] when the text may still hold a
/// literal value. The check runs on the whole text, before the cut.
pub fn query_label(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if may_hold_literal(&flat) {
        return WITHHELD_QUERY.to_string();
    }
    flat.chars().take(MAX_QUERY_CHARS).collect()
}

/// Whether `text` holds anything that is not SQL structure plus `$n` placeholders: a quoted
/// string (`'…'`, `E'…'`), a dollar-quoted body (`$$…$$`, `$tag$…$tag$`), a number that is not
/// part of an identifier or a placeholder, or a comment (free text). Double-quoted identifiers
/// are skipped as identifiers, but a digit run inside one that does not follow a letter still
/// counts (conservative: a label is dropped rather than a value shown).
pub fn may_hold_literal(text: &str) -> bool {
    if text.contains('\'') || text.contains("--") || text.contains("/*") {
        return true;
    }
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            // A placeholder is `$` and digits, not followed by an identifier character.
            let start = i + 1;
            let mut j = start;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j == start || chars.get(j).is_some_and(|&n| is_ident(n) || n == '$') {
                return true;
            }
            i = j;
        } else if c.is_ascii_digit() {
            // A digit starts a number unless it continues an identifier (`t1`, `col_2`).
            let continues_ident = i > 0 && is_ident(chars[i - 1]);
            if !continues_ident {
                return true;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    false
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(queryid: i64, calls: u64, total_ms: f64, query: &str) -> StatementRow {
        StatementRow {
            queryid,
            calls,
            total_ms,
            query: query.into(),
        }
    }

    #[test]
    fn normalised_queries_keep_their_text() {
        for q in [
            "SELECT * FROM users WHERE id = $1",
            "INSERT INTO t1 (col_2, b) VALUES ($1, $2)",
            "SELECT count(*) FROM matches WHERE created > now() - $1::interval LIMIT $2",
            "UPDATE \"Wallet\" SET coins = coins + $1 WHERE user_id = $2",
        ] {
            assert_eq!(query_label(q), q);
        }
    }

    #[test]
    fn literal_values_are_withheld() {
        for q in [
            "ALTER USER kanmon PASSWORD 'hunter2'",
            "SELECT * FROM t WHERE name = E'bob'",
            "SELECT $$secret$$",
            "SELECT $tag$secret$tag$",
            "SELECT * FROM t WHERE pin = 4242",
            "SELECT * FROM t WHERE ratio > .5",
            "SELECT * FROM t LIMIT 10",
            "SELECT $1 -- token abc",
            "SELECT /* user=alice */ $1",
            "SELECT $1a",
            "SELECT \"1234\" FROM t",
        ] {
            assert_eq!(query_label(q), WITHHELD_QUERY, "{q}");
        }
    }

    #[test]
    fn a_literal_past_the_cut_still_withholds_the_text() {
        let q = format!("SELECT {} FROM t WHERE pin = 4242", "a, ".repeat(60));
        assert!(q.len() > MAX_QUERY_CHARS);
        assert_eq!(query_label(&q), WITHHELD_QUERY);
    }

    #[test]
    fn labels_are_bounded_and_on_one_line() {
        let long = format!("SELECT\n\t{}  FROM t", "column_name, ".repeat(40));
        let label = query_label(&long);
        assert_eq!(label.chars().count(), MAX_QUERY_CHARS);
        assert!(
            label.starts_with("SELECT column_name, column_name"),
            "{label}"
        );
        assert!(
            !label.contains(['\n', '\t']) && !label.contains("  "),
            "{label}"
        );
        // Cut on a character boundary.
        let wide = "SELECT ".to_string() + &"é".repeat(200);
        assert_eq!(query_label(&wide).chars().count(), MAX_QUERY_CHARS);
    }

    #[test]
    fn top_queries_are_the_n_most_expensive() {
        let rows: Vec<StatementRow> = (0..30).map(|i| row(i, 1, i as f64, "SELECT $1")).collect();
        let top = top_queries(&rows, 10);
        assert_eq!(top.len(), 10);
        assert_eq!(top[0].queryid, "29");
        assert_eq!(top[9].queryid, "20");
        assert!((top[0].seconds - 0.029).abs() < 1e-9);
        assert_eq!(top_queries(&rows, 0), Vec::new());
    }

    #[test]
    fn totals_only_grow_through_evictions_and_resets() {
        let mut load = QueryLoad::default();
        load.update(&[row(1, 10, 100.0, "a"), row(2, 5, 50.0, "b")]);
        assert_eq!(load.calls(), 15);
        load.update(&[row(1, 12, 120.0, "a"), row(2, 5, 50.0, "b")]);
        assert_eq!(load.calls(), 17);
        // Entry 2 evicted; entry 3 new.
        load.update(&[row(1, 12, 120.0, "a"), row(3, 4, 10.0, "c")]);
        assert_eq!(load.calls(), 21);
        // pg_stat_statements_reset(): every entry starts again.
        load.update(&[row(1, 1, 1.0, "a")]);
        assert_eq!(load.calls(), 22);
        assert!((load.seconds() - 0.181).abs() < 1e-9, "{}", load.seconds());
        // An evicted entry that comes back counts from zero, not from what it had.
        load.update(&[row(1, 1, 1.0, "a"), row(2, 2, 2.0, "b")]);
        assert_eq!(load.calls(), 24);
    }
}
