//! Given / when / then tests of the user aggregate: every command, every refusal.

use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;
use uuid::Uuid;

use super::*;

type UserTest = TestFramework<User>;

fn user_id() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0192f1a8_7c3e_7b7a_9c4d_1f2e3d4c5b6a))
}

fn email() -> EmailAddress {
    EmailAddress::parse("Ann@Example.com").unwrap()
}

fn registered() -> UserEvent {
    UserEvent::UserRegistered {
        user_id: user_id(),
        email: email(),
    }
}

fn deactivated() -> UserEvent {
    UserEvent::UserDeactivated {
        reason: "asked to close the account".to_owned(),
    }
}

/// Every command other than `Register`, for the rules that apply to all of them.
fn every_command_but_register() -> Vec<UserCommand> {
    vec![
        UserCommand::VerifyEmail,
        UserCommand::ChangePassword,
        UserCommand::UpdateProfile {
            display_name: Some("Ann".to_owned()),
        },
        UserCommand::ChangeNotificationPreferences {
            price_alerts: false,
        },
        UserCommand::GrantRole { role: Role::Admin },
        UserCommand::RevokeRole { role: Role::Admin },
        UserCommand::Deactivate {
            reason: "spam".to_owned(),
        },
        UserCommand::RequestVerificationMail,
        UserCommand::ResetPassword {
            credentials_version: 0,
        },
    ]
}

#[tokio::test]
async fn register_records_the_registration() {
    UserTest::with(())
        .given_no_previous_events()
        .when_async(UserCommand::Register {
            user_id: user_id(),
            email: email(),
        })
        .await
        .then_expect_events(vec![registered()]);
}

#[tokio::test]
async fn register_twice_is_refused() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::Register {
            user_id: user_id(),
            email: email(),
        })
        .await
        .then_expect_error(UserError::AlreadyRegistered);
}

#[tokio::test]
async fn register_on_a_deactivated_user_is_refused_as_already_registered() {
    UserTest::with(())
        .given(vec![registered(), deactivated()])
        .when_async(UserCommand::Register {
            user_id: user_id(),
            email: email(),
        })
        .await
        .then_expect_error(UserError::AlreadyRegistered);
}

#[tokio::test]
async fn every_other_command_needs_a_registered_user() {
    for command in every_command_but_register() {
        UserTest::with(())
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(UserError::NotRegistered);
    }
}

#[tokio::test]
async fn every_other_command_is_refused_once_the_user_is_deactivated() {
    for command in every_command_but_register() {
        UserTest::with(())
            .given(vec![registered(), deactivated()])
            .when_async(command)
            .await
            .then_expect_error(UserError::Deactivated);
    }
}

#[tokio::test]
async fn verify_email_records_the_verification() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::VerifyEmail)
        .await
        .then_expect_events(vec![UserEvent::EmailVerified]);
}

#[tokio::test]
async fn verify_email_again_succeeds_without_a_new_event() {
    UserTest::with(())
        .given(vec![registered(), UserEvent::EmailVerified])
        .when_async(UserCommand::VerifyEmail)
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn change_password_records_that_it_changed_and_nothing_of_the_password() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::ChangePassword)
        .await
        .then_expect_events(vec![UserEvent::PasswordChanged]);
}

#[tokio::test]
async fn request_verification_mail_records_the_request_each_time() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::RequestVerificationMail)
        .await
        .then_expect_events(vec![UserEvent::VerificationMailRequested]);
    // Asking again asks again (the command side throttles how often).
    UserTest::with(())
        .given(vec![registered(), UserEvent::VerificationMailRequested])
        .when_async(UserCommand::RequestVerificationMail)
        .await
        .then_expect_events(vec![UserEvent::VerificationMailRequested]);
}

#[tokio::test]
async fn request_verification_mail_once_verified_is_refused() {
    UserTest::with(())
        .given(vec![registered(), UserEvent::EmailVerified])
        .when_async(UserCommand::RequestVerificationMail)
        .await
        .then_expect_error(UserError::EmailAlreadyVerified);
}

#[tokio::test]
async fn request_password_reset_names_the_current_password() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::RequestPasswordReset)
        .await
        .then_expect_events(vec![UserEvent::PasswordResetRequested {
            credentials_version: 0,
        }]);
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::PasswordChanged,
            UserEvent::PasswordResetRequested {
                credentials_version: 1,
            },
            UserEvent::PasswordChanged,
        ])
        .when_async(UserCommand::RequestPasswordReset)
        .await
        .then_expect_events(vec![UserEvent::PasswordResetRequested {
            credentials_version: 2,
        }]);
}

#[tokio::test]
async fn request_password_reset_does_not_need_a_verified_address() {
    // The mail goes to the registered address; following its link proves it.
    UserTest::with(())
        .given(vec![registered(), UserEvent::VerificationMailRequested])
        .when_async(UserCommand::RequestPasswordReset)
        .await
        .then_expect_events(vec![UserEvent::PasswordResetRequested {
            credentials_version: 0,
        }]);
}

#[tokio::test]
async fn request_password_reset_for_a_deactivated_user_records_nothing_and_refuses_nothing() {
    UserTest::with(())
        .given(vec![registered(), deactivated()])
        .when_async(UserCommand::RequestPasswordReset)
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn request_password_reset_needs_a_registered_user() {
    UserTest::with(())
        .given_no_previous_events()
        .when_async(UserCommand::RequestPasswordReset)
        .await
        .then_expect_error(UserError::NotRegistered);
}

#[tokio::test]
async fn reset_password_with_the_current_password_s_link_changes_it() {
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::PasswordResetRequested {
                credentials_version: 0,
            },
        ])
        .when_async(UserCommand::ResetPassword {
            credentials_version: 0,
        })
        .await
        .then_expect_events(vec![UserEvent::PasswordChanged]);
}

#[tokio::test]
async fn reset_password_works_once() {
    // The link's password was replaced by the reset itself.
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::PasswordResetRequested {
                credentials_version: 0,
            },
            UserEvent::PasswordChanged,
        ])
        .when_async(UserCommand::ResetPassword {
            credentials_version: 0,
        })
        .await
        .then_expect_error(UserError::PasswordChangedSinceResetRequested);
}

#[tokio::test]
async fn reset_password_after_any_other_password_change_is_refused() {
    // A change through `POST /me/password` after the mail was sent also ends the link,
    // and an older link stays dead when a newer one is used.
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::PasswordResetRequested {
                credentials_version: 0,
            },
            UserEvent::PasswordResetRequested {
                credentials_version: 0,
            },
            UserEvent::PasswordChanged,
            UserEvent::PasswordResetRequested {
                credentials_version: 1,
            },
        ])
        .when_async(UserCommand::ResetPassword {
            credentials_version: 0,
        })
        .await
        .then_expect_error(UserError::PasswordChangedSinceResetRequested);
}

#[tokio::test]
async fn update_profile_trims_the_display_name() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::UpdateProfile {
            display_name: Some("  Ann Smith \n".to_owned()),
        })
        .await
        .then_expect_events(vec![UserEvent::ProfileUpdated {
            display_name: Some("Ann Smith".to_owned()),
        }]);
}

#[tokio::test]
async fn update_profile_with_none_or_blank_clears_the_display_name() {
    let named = UserEvent::ProfileUpdated {
        display_name: Some("Ann".to_owned()),
    };
    for display_name in [None, Some("   ".to_owned())] {
        UserTest::with(())
            .given(vec![registered(), named.clone()])
            .when_async(UserCommand::UpdateProfile { display_name })
            .await
            .then_expect_events(vec![UserEvent::ProfileUpdated { display_name: None }]);
    }
}

#[tokio::test]
async fn update_profile_without_a_change_records_nothing() {
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::ProfileUpdated {
                display_name: Some("Ann".to_owned()),
            },
        ])
        .when_async(UserCommand::UpdateProfile {
            display_name: Some(" Ann ".to_owned()),
        })
        .await
        .then_expect_events(vec![]);
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::UpdateProfile { display_name: None })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn update_profile_with_a_too_long_display_name_is_refused() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::UpdateProfile {
            display_name: Some("ї".repeat(MAX_DISPLAY_NAME_CHARS + 1)),
        })
        .await
        .then_expect_error(UserError::DisplayNameTooLong { max: 100 });
    // Exactly the limit, counted in characters, is fine.
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::UpdateProfile {
            display_name: Some("ї".repeat(MAX_DISPLAY_NAME_CHARS)),
        })
        .await
        .then_expect_events(vec![UserEvent::ProfileUpdated {
            display_name: Some("ї".repeat(MAX_DISPLAY_NAME_CHARS)),
        }]);
}

#[tokio::test]
async fn turning_price_alerts_off_and_on_records_each_change() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::ChangeNotificationPreferences {
            price_alerts: false,
        })
        .await
        .then_expect_events(vec![UserEvent::NotificationPreferencesChanged {
            price_alerts: false,
        }]);
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::NotificationPreferencesChanged {
                price_alerts: false,
            },
        ])
        .when_async(UserCommand::ChangeNotificationPreferences { price_alerts: true })
        .await
        .then_expect_events(vec![UserEvent::NotificationPreferencesChanged {
            price_alerts: true,
        }]);
}

#[tokio::test]
async fn price_alerts_are_on_by_default_so_turning_them_on_records_nothing() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::ChangeNotificationPreferences { price_alerts: true })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn grant_role_records_the_grant_once() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::GrantRole {
            role: Role::Auditor,
        })
        .await
        .then_expect_events(vec![UserEvent::RoleGranted {
            role: Role::Auditor,
        }]);
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::RoleGranted {
                role: Role::Auditor,
            },
        ])
        .when_async(UserCommand::GrantRole {
            role: Role::Auditor,
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn revoke_role_records_the_revocation_only_of_a_held_role() {
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::RoleGranted { role: Role::Admin },
        ])
        .when_async(UserCommand::RevokeRole { role: Role::Admin })
        .await
        .then_expect_events(vec![UserEvent::RoleRevoked { role: Role::Admin }]);
    UserTest::with(())
        .given(vec![
            registered(),
            UserEvent::RoleGranted { role: Role::Admin },
        ])
        .when_async(UserCommand::RevokeRole {
            role: Role::Auditor,
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn deactivate_records_the_trimmed_reason() {
    UserTest::with(())
        .given(vec![registered()])
        .when_async(UserCommand::Deactivate {
            reason: "  asked to close the account ".to_owned(),
        })
        .await
        .then_expect_events(vec![deactivated()]);
}

#[tokio::test]
async fn deactivate_without_a_reason_is_refused() {
    for reason in ["", "  \t"] {
        UserTest::with(())
            .given(vec![registered()])
            .when_async(UserCommand::Deactivate {
                reason: reason.to_owned(),
            })
            .await
            .then_expect_error(UserError::ReasonRequired);
    }
}

#[test]
fn state_follows_the_events() {
    let mut user = User::default();
    assert!(!user.is_registered());
    assert_eq!(user.id(), None);
    assert!(!user.price_alerts_enabled());

    for event in [
        registered(),
        UserEvent::EmailVerified,
        UserEvent::PasswordChanged,
        UserEvent::ProfileUpdated {
            display_name: Some("Ann".to_owned()),
        },
        UserEvent::NotificationPreferencesChanged {
            price_alerts: false,
        },
        UserEvent::RoleGranted { role: Role::Admin },
        UserEvent::RoleGranted {
            role: Role::Auditor,
        },
        UserEvent::RoleRevoked { role: Role::Admin },
        UserEvent::VerificationMailRequested,
        UserEvent::PasswordResetRequested {
            credentials_version: 1,
        },
        UserEvent::PasswordChanged,
    ] {
        user.apply(event);
    }

    assert!(user.is_registered());
    assert_eq!(user.id(), Some(user_id()));
    assert_eq!(user.email(), Some(&email()));
    assert!(user.email_verified());
    assert_eq!(user.display_name(), Some("Ann"));
    assert!(!user.price_alerts_enabled());
    assert_eq!(user.roles(), &BTreeSet::from([Role::Auditor]));
    assert!(user.has_role(Role::Auditor));
    assert!(!user.has_role(Role::Admin));
    assert!(!user.is_deactivated());
    assert_eq!(user.credentials_version(), 2);

    user.apply(deactivated());
    assert!(user.is_deactivated());
}

#[test]
fn a_registered_user_has_price_alerts_on() {
    let mut user = User::default();
    user.apply(registered());
    assert!(user.price_alerts_enabled());
    assert!(!user.email_verified());
    assert!(user.roles().is_empty());
    assert_eq!(user.credentials_version(), 0);
}

#[test]
fn no_event_carries_anything_of_the_password() {
    let events = vec![
        registered(),
        UserEvent::PasswordChanged,
        UserEvent::PasswordResetRequested {
            credentials_version: 3,
        },
    ];
    for event in events {
        let json = serde_json::to_string(&event).unwrap();
        assert!(!json.contains("password"), "{json}");
    }
}

#[test]
fn event_types_are_the_variant_names_with_their_versions() {
    let events = [
        (registered(), "UserRegistered"),
        (UserEvent::EmailVerified, "EmailVerified"),
        (UserEvent::PasswordChanged, "PasswordChanged"),
        (
            UserEvent::ProfileUpdated { display_name: None },
            "ProfileUpdated",
        ),
        (
            UserEvent::NotificationPreferencesChanged { price_alerts: true },
            "NotificationPreferencesChanged",
        ),
        (UserEvent::RoleGranted { role: Role::Admin }, "RoleGranted"),
        (UserEvent::RoleRevoked { role: Role::Admin }, "RoleRevoked"),
        (deactivated(), "UserDeactivated"),
        (
            UserEvent::VerificationMailRequested,
            "VerificationMailRequested",
        ),
        (
            UserEvent::PasswordResetRequested {
                credentials_version: 0,
            },
            "PasswordResetRequested",
        ),
    ];
    for (event, event_type) in events {
        assert_eq!(event.event_type(), event_type);
        let expected_version = match event_type {
            // 2.0 since the password hash left the events.
            "UserRegistered" | "PasswordChanged" => "2.0",
            _ => "1.0",
        };
        assert_eq!(event.event_version(), expected_version, "{event_type}");
        // Externally tagged: the stored payload's only key is the event type.
        let payload = serde_json::to_value(&event).unwrap();
        let tag = match &payload {
            serde_json::Value::String(unit_variant) => unit_variant.clone(),
            serde_json::Value::Object(map) => map.keys().next().unwrap().clone(),
            other => panic!("unexpected payload {other}"),
        };
        assert_eq!(tag, event_type);
        assert_eq!(serde_json::from_value::<UserEvent>(payload).unwrap(), event);
    }
}

#[test]
fn roles_are_spelled_in_lower_case_everywhere() {
    assert_eq!(serde_json::to_value(Role::Admin).unwrap(), "admin");
    assert_eq!(serde_json::to_value(Role::Auditor).unwrap(), "auditor");
    assert_eq!("admin".parse(), Ok(Role::Admin));
    assert_eq!("auditor".parse(), Ok(Role::Auditor));
    assert_eq!(Role::Auditor.to_string(), "auditor");
    assert_eq!("root".parse::<Role>(), Err(UnknownRole("root".to_owned())));
}
