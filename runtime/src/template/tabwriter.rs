//! Column alignment as Go's text/tabwriter does it with the settings Docker's `table`
//! formats use (`tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`): a tab ends a cell; a
//! column is as wide as its widest cell plus 3 spaces, and at least 10; the text after a
//! line's last tab is not a column; a run of lines that have a cell in a column is one
//! block, aligned on its own.

/// The narrowest a column is, padding included.
const MIN_WIDTH: usize = 10;
/// Spaces after a column's widest cell.
const PADDING: usize = 3;

/// `text` with its tab-separated cells aligned.
pub(crate) fn align(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    format(&lines, 0, lines.len(), &mut widths, &mut out);
    out
}

fn width(cell: &str) -> usize {
    cell.chars().count()
}

/// Lines `start..end`, whose columns before `widths.len()` are already sized: sizes the
/// next column block by block (Go's `format`), writing lines once every column is known.
fn format(
    lines: &[Vec<&str>],
    start: usize,
    end: usize,
    widths: &mut Vec<usize>,
    out: &mut String,
) {
    let column = widths.len();
    let mut done = start;
    let mut this = start;
    while this < end {
        // A line has a cell in this column when a tab ends it.
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, done, this, widths, out);
        let block_start = this;
        let mut w = MIN_WIDTH;
        while this < end && column + 1 < lines[this].len() {
            w = w.max(width(lines[this][column]) + PADDING);
            this += 1;
        }
        widths.push(w);
        format(lines, block_start, this, widths, out);
        widths.pop();
        done = this;
    }
    write_lines(lines, done, end, widths, out);
}

fn write_lines(lines: &[Vec<&str>], start: usize, end: usize, widths: &[usize], out: &mut String) {
    for (i, line) in lines.iter().enumerate().take(end).skip(start) {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j < widths.len() && j + 1 < line.len() {
                out.push_str(&" ".repeat(widths[j].saturating_sub(width(cell))));
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_as_gos_tabwriter() {
        assert_eq!(
            align("NAMES\tSTATUS\nweb\tUp 2 seconds\nlonger-name-here\tExited (0)\n"),
            "NAMES              STATUS\n\
             web                Up 2 seconds\n\
             longer-name-here   Exited (0)\n"
        );
        // A short column is still 10 wide; text after the last tab is no column.
        assert_eq!(
            align("A\tB\tC\nx\ty\tz\n"),
            "A         B         C\nx         y         z\n"
        );
        // A line without tabs ends the block: the lines after it are sized anew.
        assert_eq!(
            align("a\tb\nlong-cell-text\tc\nplain\nd\te"),
            "a                b\nlong-cell-text   c\nplain\nd         e"
        );
    }
}
