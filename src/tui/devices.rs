//! The sound-device picker (SPEC 8.1 in the TUI): a popup over the panes
//! listing the system's microphones and speakers as the last
//! `DEVICED_UPDATED` gave them, the current ones marked; Enter switches
//! (`switchDevice`, in the call too). And the line of the call pane that
//! says which devices the call uses.

use crossterm::event::KeyCode;
use ratatui::Frame;
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState};

use crate::client::engine::{Command, DeviceKind};
use crate::client::event::{DeviceState, SoundDevice};
use crate::tui::layout::centered;
use crate::tui::state::{Effect, Model};

/// The picker while it is open.
#[derive(Clone, Debug, PartialEq)]
pub struct Picker {
    pub kind: DeviceKind,
    pub selected: usize,
}

/// Opens the picker on the microphones, and asks for a fresh list.
pub fn open(model: &mut Model) -> Vec<Effect> {
    model.picker = Some(Picker {
        kind: DeviceKind::Microphone,
        selected: 0,
    });
    vec![Effect::Engine(Command::GetDeviceList)]
}

fn list(devices: &DeviceState, kind: DeviceKind) -> (&[SoundDevice], &str) {
    match kind {
        DeviceKind::Microphone => (&devices.microphone_list, &devices.current_microphone_id),
        DeviceKind::Speaker => (&devices.speaker_list, &devices.current_speaker_id),
    }
}

/// Keys while the picker is open: it sees them first.
pub fn on_key(model: &mut Model, code: KeyCode) -> Vec<Effect> {
    let Some(picker) = model.picker.as_mut() else {
        return Vec::new();
    };
    let len = model
        .devices
        .as_ref()
        .map_or(0, |d| list(d, picker.kind).0.len());
    match code {
        KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('v') => model.picker = None,
        KeyCode::Tab | KeyCode::BackTab | KeyCode::Left | KeyCode::Right => {
            picker.kind = match picker.kind {
                DeviceKind::Microphone => DeviceKind::Speaker,
                DeviceKind::Speaker => DeviceKind::Microphone,
            };
            picker.selected = 0;
        }
        KeyCode::Down | KeyCode::Char('j') => {
            picker.selected = (picker.selected + 1).min(len.saturating_sub(1));
        }
        KeyCode::Up | KeyCode::Char('k') => picker.selected = picker.selected.saturating_sub(1),
        KeyCode::Enter => {
            let kind = picker.kind;
            let chosen = (model.devices.as_ref())
                .and_then(|d| list(d, kind).0.get(picker.selected))
                .and_then(|d| d.device_id.parse().ok());
            model.picker = None;
            if let Some(spec) = chosen {
                return vec![Effect::Engine(Command::SwitchDevice { kind, spec })];
            }
        }
        _ => {}
    }
    Vec::new()
}

/// The popup: one list, its title naming the side shown and how to switch.
pub fn draw(frame: &mut Frame, model: &Model) {
    let Some(picker) = &model.picker else { return };
    let side = match picker.kind {
        DeviceKind::Microphone => "Microphone",
        DeviceKind::Speaker => "Speaker",
    };
    let (items, selected): (Vec<ListItem>, Option<usize>) = match &model.devices {
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

/// `mic a.monitor · speaker default`, once the devices are known.
pub fn call_line(model: &Model) -> Option<Line<'static>> {
    let d = model.devices.as_ref()?;
    Some(Line::from(
        format!(
            "mic {} · speaker {}",
            d.current_microphone_id, d.current_speaker_id
        )
        .dark_gray(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::event::Event;
    use crate::ids::{DeviceId, Platform, UserId};
    use crate::media::spec::AudioSpec;
    use crate::tui::keymap::Keymap;

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
        assert_eq!(open(&mut model), [Effect::Engine(Command::GetDeviceList)]);
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
        on_key(&mut model, KeyCode::Down);
        let effects = on_key(&mut model, KeyCode::Enter);
        assert_eq!(
            effects,
            [Effect::Engine(Command::SwitchDevice {
                kind: DeviceKind::Microphone,
                spec: AudioSpec::Device("a.monitor".into()),
            })]
        );
        assert!(model.picker.is_none());
        let line = call_line(&model).unwrap().to_string();
        assert_eq!(line, "mic default · speaker a");
        open(&mut model);
        on_key(&mut model, KeyCode::Tab);
        assert_eq!(model.picker.as_ref().unwrap().kind, DeviceKind::Speaker);
        on_key(&mut model, KeyCode::Esc);
        assert!(model.picker.is_none());
    }
}
