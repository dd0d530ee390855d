//! Colours, with a monochrome fallback when `NO_COLOR` is set (<https://no-color.org>).
//!
//! Every state that a colour shows is also shown by text (a `LOW` flag, a `CRIT` severity, a
//! `!` marker), so the monochrome console loses no information; it uses bold and reverse video
//! where the colour console uses red, yellow and green.

use ratatui::style::{Color, Modifier, Style};

/// The styles the views use, by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub colour: bool,
    /// Titles, headers and the selected tab.
    pub title: Style,
    /// Secondary text: units, hints.
    pub dim: Style,
    /// Numbers that matter.
    pub value: Style,
    /// All is well (connected).
    pub good: Style,
    /// Needs attention (warnings, low stock).
    pub warn: Style,
    /// Something is wrong (critical alerts, out of stock, disconnected).
    pub bad: Style,
    /// The selected row.
    pub selected: Style,
    /// The sparkline.
    pub chart: Style,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to anything non-empty.
    pub fn from_env() -> Self {
        Self::for_no_color(std::env::var_os("NO_COLOR").as_deref())
    }

    /// The theme for a value of `NO_COLOR`: monochrome when it is set and not empty.
    pub fn for_no_color(value: Option<&std::ffi::OsStr>) -> Self {
        match value {
            Some(value) if !value.is_empty() => Self::monochrome(),
            _ => Self::colour(),
        }
    }

    pub fn colour() -> Self {
        Self {
            colour: true,
            title: Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            dim: Style::new().fg(Color::DarkGray),
            value: Style::new().add_modifier(Modifier::BOLD),
            good: Style::new().fg(Color::Green),
            warn: Style::new().fg(Color::Yellow),
            bad: Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            selected: Style::new().bg(Color::Blue).fg(Color::White),
            chart: Style::new().fg(Color::Green),
        }
    }

    pub fn monochrome() -> Self {
        Self {
            colour: false,
            title: Style::new().add_modifier(Modifier::BOLD),
            dim: Style::new(),
            value: Style::new().add_modifier(Modifier::BOLD),
            good: Style::new(),
            warn: Style::new().add_modifier(Modifier::BOLD),
            bad: Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            selected: Style::new().add_modifier(Modifier::REVERSED),
            chart: Style::new(),
        }
    }
}
