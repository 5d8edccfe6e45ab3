//! The seed's two examples (002 §3.5), verbatim, and "activating never fires at once".

mod common;

use common::*;
use wharf_trigger::first_after_activation;

/// "Configured at 2021-03-25 14:53:21 with every n minutes, 2 minutes: the execution
/// times are 2021-03-25 14:54:00, 2021-03-25 14:56:00, 2021-03-25 14:58:00 and so on."
#[test]
fn every_2_minutes_set_at_14_53_21_fires_at_14_54_14_56_14_58() {
    let set_at = local("2021-03-25 14:53:21", "Asia/Shanghai");
    assert_eq!(
        fires(&every_minutes(2), set_at, "Asia/Shanghai", 3),
        [
            "2021-03-25T14:54:00+08:00[Asia/Shanghai]",
            "2021-03-25T14:56:00+08:00[Asia/Shanghai]",
            "2021-03-25T14:58:00+08:00[Asia/Shanghai]",
        ]
    );
}

/// "Configured at 2021-03-25 14:53:21 with every n hours, 2 hours, 28: the execution
/// times are 2021-03-25 16:28:00, 2021-03-25 18:28:00, 2021-03-25 20:28:00 and so on."
#[test]
fn every_2_hours_at_28_set_at_14_53_21_fires_at_16_28_18_28_20_28() {
    let set_at = local("2021-03-25 14:53:21", "Asia/Shanghai");
    assert_eq!(
        fires(&every_hours(2, 28), set_at, "Asia/Shanghai", 3),
        [
            "2021-03-25T16:28:00+08:00[Asia/Shanghai]",
            "2021-03-25T18:28:00+08:00[Asia/Shanghai]",
            "2021-03-25T20:28:00+08:00[Asia/Shanghai]",
        ]
    );
}

/// The examples hold in any zone, whether the zone is the server's or the trigger's.
#[test]
fn the_seed_examples_hold_in_other_zones_and_through_the_trigger_zone() {
    for zone in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"] {
        let set_at = local("2021-03-25 14:53:21", zone);
        let minutes = fires_local(&every_minutes(2), set_at, zone, 3);
        let times: Vec<&str> = minutes.iter().map(|s| &s[11..19]).collect();
        assert_eq!(times, ["14:54:00", "14:56:00", "14:58:00"], "{zone}");
        let hours = fires_local(&in_zone(every_hours(2, 28), zone), set_at, "UTC", 3);
        let times: Vec<&str> = hours.iter().map(|s| &s[..19]).collect();
        assert_eq!(times, ["2021-03-25T16:28:00", "2021-03-25T18:28:00", "2021-03-25T20:28:00"], "{zone}");
    }
}

/// Every n from 1 to 1440 fires first at the next whole multiple of n minutes of the
/// local day after 14:53:21 (minute 893), or at midnight when none is left today.
#[test]
fn every_n_minutes_fires_first_at_the_next_multiple_of_n_for_every_n() {
    let set_at = local("2021-03-25 14:53:21", "Asia/Shanghai");
    for n in 1..=1440u32 {
        let next = (893 / n + 1) * n;
        let expected = if next < 1440 {
            format!("2021-03-25T{:02}:{:02}:00+08:00[Asia/Shanghai]", next / 60, next % 60)
        } else {
            "2021-03-26T00:00:00+08:00[Asia/Shanghai]".to_owned()
        };
        assert_eq!(fires(&every_minutes(n), set_at, "Asia/Shanghai", 1), [expected], "n = {n}");
    }
}

/// Activating or editing a timer computes the next *future* time: on a due minute
/// itself, the next one, never "now".
#[test]
fn activation_on_a_due_time_waits_for_the_next_one() {
    let shanghai = tz("Asia/Shanghai");
    let on_due = local("2021-03-25 14:54:00", "Asia/Shanghai");
    let next = first_after_activation(&every_minutes(2), on_due, &shanghai).unwrap().unwrap();
    assert_eq!(show(&next), "2021-03-25T14:56:00+08:00[Asia/Shanghai]");

    let on_due = local("2021-03-25 16:28:00", "Asia/Shanghai");
    let next = first_after_activation(&every_hours(2, 28), on_due, &shanghai).unwrap().unwrap();
    assert_eq!(show(&next), "2021-03-25T18:28:00+08:00[Asia/Shanghai]");

    let just_before = local("2021-03-25 16:27:59.999999999", "Asia/Shanghai");
    let next = first_after_activation(&every_hours(2, 28), just_before, &shanghai).unwrap().unwrap();
    assert_eq!(show(&next), "2021-03-25T16:28:00+08:00[Asia/Shanghai]");

    let next = first_after_activation(&daily("14:53"), local("2021-03-25 14:53:00", "Asia/Shanghai"), &shanghai);
    assert_eq!(show(&next.unwrap().unwrap()), "2021-03-26T14:53:00+08:00[Asia/Shanghai]");
}

/// The trigger's own zone wins over the server's.
#[test]
fn the_trigger_zone_overrides_the_server_zone() {
    let set_at = at("2021-03-25T06:53:21Z");
    assert_eq!(fires(&daily("09:00"), set_at, "Asia/Shanghai", 1), ["2021-03-26T09:00:00+08:00[Asia/Shanghai]"]);
    assert_eq!(
        fires(&in_zone(daily("09:00"), "Europe/Berlin"), set_at, "Asia/Shanghai", 1),
        ["2021-03-25T09:00:00+01:00[Europe/Berlin]"]
    );
}
