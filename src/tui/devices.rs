//! The sound-device picker (SPEC 8.1 in the TUI): a popup over the panes
//! listing the system's microphones and speakers as the last
//! `DEVICED_UPDATED` gave them, the current ones marked; Enter switches
//! (`switchDevice`, in the call too). And what the call pane says of the
//! devices the call uses. Pure functions of the picker and the device
//! list, so that the model and the view both use them.

use crossterm::event::KeyCode;
use ratatui::Frame;
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState};

use crate::client::engine::{Command, DeviceKind};
use crate::client::event::{DeviceState, SoundDevice};
use crate::tui::layout::centered;

/// The picker while it is open.
#[derive(Clone, Debug, PartialEq)]
pub struct Picker {
    pub kind: DeviceKind,
    pub selected: usize,
}

impl Picker {
    /// On the microphones (the TUI asks for a fresh list as it opens it).
    pub fn new() -> Self {
        Picker {
            kind: DeviceKind::Microphone,
            selected: 0,
        }
    }
}

impl Default for Picker {
    fn default() -> Self {
        Self::new()
    }
}

/// One side's entries, and the one in use. What is in use is listed first
/// when it is not a sound card (a tone, a file), so that it is seen and
/// marked; `null`'s system description (both sides' at once, too long for
/// the popup) is said for the side shown.
fn list(devices: &DeviceState, kind: DeviceKind) -> (Vec<SoundDevice>, &str) {
    let (entries, current, null) = match kind {
        DeviceKind::Microphone => (
            &devices.microphone_list,
            &devices.current_microphone_id,
            "silence",
        ),
        DeviceKind::Speaker => (
            &devices.speaker_list,
            &devices.current_speaker_id,
            "sound discarded",
        ),
    };
    let mut out: Vec<SoundDevice> = entries
        .iter()
        .map(|d| match d.device_id.as_str() {
            "null" => SoundDevice {
                device_id: d.device_id.clone(),
                label: null.into(),
            },
            _ => d.clone(),
        })
        .collect();
    if !out.iter().any(|d| d.device_id == *current) {
        out.insert(
            0,
            SoundDevice {
                device_id: current.clone(),
                label: "in use, not a sound card".into(),
            },
        );
    }
    (out, current)
}

/// Keys while the picker is open (it sees them first): what to ask of the
/// engine, if anything. Enter and Esc close it.
pub fn on_key(
    picker: &mut Option<Picker>,
    devices: Option<&DeviceState>,
    code: KeyCode,
) -> Option<Command> {
    let open = picker.as_mut()?;
    let len = devices.map_or(0, |d| list(d, open.kind).0.len());
    match code {
        KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('s') => *picker = None,
        KeyCode::Tab | KeyCode::BackTab | KeyCode::Left | KeyCode::Right => {
            open.kind = match open.kind {
                DeviceKind::Microphone => DeviceKind::Speaker,
                DeviceKind::Speaker => DeviceKind::Microphone,
            };
            open.selected = 0;
        }
        KeyCode::Down | KeyCode::Char('j') => {
            open.selected = (open.selected + 1).min(len.saturating_sub(1));
        }
        KeyCode::Up | KeyCode::Char('k') => open.selected = open.selected.saturating_sub(1),
        KeyCode::Enter => {
            let kind = open.kind;
            let spec = devices
                .and_then(|d| list(d, kind).0.into_iter().nth(open.selected))
                .and_then(|d| d.device_id.parse().ok());
            *picker = None;
            return spec.map(|spec| Command::SwitchDevice { kind, spec });
        }
        _ => {}
    }
    None
}

/// The popup: one list, its title naming the side shown and how to switch.
pub fn draw(frame: &mut Frame, picker: Option<&Picker>, devices: Option<&DeviceState>) {
    let Some(picker) = picker else { return };
    let side = match picker.kind {
        DeviceKind::Microphone => "Microphone",
        DeviceKind::Speaker => "Speaker",
    };
    let (items, selected): (Vec<ListItem>, Option<usize>) = match devices {
        None => (
            vec![ListItem::new("listing sound devices…".dark_gray())],
            None,
        ),
        Some(devices) => {
            let (entries, current) = list(devices, picker.kind);
            let items = entries
                .iter()
                .map(|d| {
                    let mark = if d.device_id == current { "● " } else { "  " };
                    ListItem::new(Line::from(vec![
                        Span::raw(mark).green(),
                        Span::raw(d.device_id.clone()).bold(),
                        format!("  {}", d.label).dark_gray(),
                    ]))
                })
                .collect();
            (items, Some(picker.selected))
        }
    };
    let width = frame.area().width.saturating_sub(4).min(72);
    let height = (items.len() as u16 + 2).clamp(3, frame.area().height.saturating_sub(2));
    let area = centered(frame.area(), width, height);
    let block = Block::bordered()
        .title(format!(" {side} · Tab other side · Enter use · Esc close ").bold());
    let list = List::new(items)
        .block(block)
        .highlight_style(Style::default().reversed());
    let mut state = ListState::default().with_selected(selected);
    frame.render_widget(Clear, area);
    frame.render_stateful_widget(list, area, &mut state);
}

/// `mic a.monitor · speaker default`, once the devices are known: the call
/// pane puts it after the room.
pub fn in_use(devices: Option<&DeviceState>) -> Option<String> {
    let d = devices?;
    Some(format!(
        "mic {} · speaker {}",
        d.current_microphone_id, d.current_speaker_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::event::Event;
    use crate::ids::{DeviceId, Platform, UserId};
    use crate::media::spec::AudioSpec;
    use crate::tui::keymap::Keymap;
    use crate::tui::state::Model;

    fn device(id: &str) -> SoundDevice {
        SoundDevice {
            device_id: id.into(),
            label: format!("{id} label"),
        }
    }

    #[test]
    fn the_picker_lists_switches_and_closes() {
        let mut model = Model::new(
            UserId::parse("alice").unwrap(),
            DeviceId::parse("d1").unwrap(),
            Platform::parse("terminal").unwrap(),
            "ws://127.0.0.1:1".into(),
            Keymap::default(),
            0,
        );
        model.picker = Some(Picker::new());
        model.on_engine(
            Event::DevicedUpdated {
                devices: DeviceState {
                    microphone_list: vec![device("default"), device("a.monitor")],
                    speaker_list: vec![device("default"), device("a")],
                    current_microphone_id: "default".into(),
                    current_speaker_id: "a".into(),
                },
            },
            1,
        );
        let devices = model.devices.clone();
        on_key(&mut model.picker, devices.as_ref(), KeyCode::Down);
        let command = on_key(&mut model.picker, devices.as_ref(), KeyCode::Enter);
        assert_eq!(
            command,
            Some(Command::SwitchDevice {
                kind: DeviceKind::Microphone,
                spec: AudioSpec::Device("a.monitor".into()),
            })
        );
        assert!(model.picker.is_none());
        assert_eq!(in_use(devices.as_ref()).unwrap(), "mic default · speaker a");
        model.picker = Some(Picker::new());
        on_key(&mut model.picker, devices.as_ref(), KeyCode::Tab);
        assert_eq!(model.picker.as_ref().unwrap().kind, DeviceKind::Speaker);
        on_key(&mut model.picker, devices.as_ref(), KeyCode::Esc);
        assert!(model.picker.is_none());
    }

    /// A tone or a file in use is listed and marked (it is no sound card,
    /// so the system's list lacks it), and `null` says what it does on the
    /// side shown.
    #[test]
    fn what_is_in_use_is_marked_even_when_it_is_no_sound_card() {
        let devices = DeviceState {
            microphone_list: vec![device("default"), device("null")],
            speaker_list: vec![device("default"), device("null")],
            current_microphone_id: "tone:880".into(),
            current_speaker_id: "null".into(),
        };
        let (mics, current) = list(&devices, DeviceKind::Microphone);
        assert_eq!(current, "tone:880");
        assert_eq!(mics[0].device_id, "tone:880");
        assert_eq!(mics[2].label, "silence");
        let (speakers, _) = list(&devices, DeviceKind::Speaker);
        assert_eq!(speakers.len(), 2, "null in use is listed once");
        assert_eq!(speakers[1].label, "sound discarded");
    }
}
