//! Line splitting and the "which lines were added" computation.

use std::collections::HashMap;

/// Splits `text` into lines on `\n`, dropping one trailing `\r` per line (so CRLF and LF files
/// compare equal). A final `\n` does not start an extra empty line.
pub(super) fn split_lines(text: &[u8]) -> Vec<&[u8]> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    if text.is_empty() {
        return Vec::new();
    }
    body.split(|b| *b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line)).collect()
}

/// Which lines of `after` are added relative to `before`, using a line multiset: a line counts
/// as added when it occurs more often in `after` than in `before` (the later occurrences are the
/// added ones). Moving lines around therefore adds nothing. Returned flags are parallel to
/// `split_lines(after)`.
pub(super) fn added_flags(before: Option<&[u8]>, after_lines: &[&[u8]]) -> Vec<bool> {
    let Some(before) = before else {
        return vec![true; after_lines.len()];
    };
    let mut remaining: HashMap<&[u8], usize> = HashMap::new();
    for line in split_lines(before) {
        *remaining.entry(line).or_insert(0) += 1;
    }
    after_lines
        .iter()
        .map(|line| match remaining.get_mut(line) {
            Some(count) if *count > 0 => {
                *count -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

/// 1-based line number for a 0-based index, saturating at `u32::MAX`.
pub(super) fn line_number(index: usize) -> u32 {
    u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lf_crlf_and_missing_final_newline() {
        assert!(split_lines(b"").is_empty());
        assert_eq!(split_lines(b"\n"), vec![b"" as &[u8]]);
        assert_eq!(split_lines(b"a\r\nb\r\n"), vec![b"a" as &[u8], b"b"]);
        assert_eq!(split_lines(b"a\nb"), vec![b"a" as &[u8], b"b"]);
        assert_eq!(split_lines(b"a\n\nb\n"), vec![b"a" as &[u8], b"", b"b"]);
    }

    #[test]
    fn multiset_marks_only_extra_occurrences() {
        let after = split_lines(b"x\ny\nx\nz\n");
        assert_eq!(added_flags(Some(b"x\ny\n"), &after), [false, false, true, true]);
        assert_eq!(added_flags(None, &after), [true; 4]);
        // Reordering adds nothing; CRLF conversion adds nothing.
        assert_eq!(added_flags(Some(b"z\r\nx\r\nx\r\ny\r\n"), &after), [false; 4]);
    }

    #[test]
    fn line_numbers_are_one_based_and_saturate() {
        assert_eq!(line_number(0), 1);
        assert_eq!(line_number(usize::MAX), u32::MAX);
    }
}
