use aicd_core::deliveries::{DeliveryClaim, DeliveryStatus, NewDelivery};
use aicd_core::github::InstallationId;
use aicd_core::store::DeliveryStore;
use chrono::Duration;

use crate::support::Harness;

/// A delivery whose body is unique to its id.
fn delivery(id: &str) -> NewDelivery {
    NewDelivery {
        delivery_id: id.into(),
        event: "issues".into(),
        action: Some("labeled".into()),
        installation_id: Some(InstallationId::new(77).unwrap()),
        body_sha256: Some(format!("body of {id}").into_bytes()),
    }
}

pub(crate) async fn a_delivery_is_processed_once(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.begin_delivery(delivery("d-1"), Duration::minutes(5)).await.unwrap(), DeliveryClaim::Process);
    // While it is being processed, a redelivery is a duplicate.
    let during = s.begin_delivery(delivery("d-1"), Duration::minutes(5)).await.unwrap();
    assert_eq!(during, DeliveryClaim::Duplicate(DeliveryStatus::Processing));
    s.finish_delivery("d-1", DeliveryStatus::Processed, None).await.unwrap();
    let after = s.begin_delivery(delivery("d-1"), Duration::minutes(5)).await.unwrap();
    assert_eq!(after, DeliveryClaim::Duplicate(DeliveryStatus::Processed));
    let stored = s.get_delivery("d-1").await.unwrap();
    assert_eq!(
        (stored.event.as_str(), stored.action.as_deref(), stored.installation_id),
        ("issues", Some("labeled"), Some(InstallationId::new(77).unwrap()))
    );
    assert_eq!((stored.status, stored.attempts), (DeliveryStatus::Processed, 1));
    assert!(s.finish_delivery("nope", DeliveryStatus::Processed, None).await.is_err());
    assert!(s.begin_delivery(delivery(""), Duration::minutes(5)).await.is_err());
}

pub(crate) async fn a_failed_delivery_is_processed_again_on_redelivery(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.begin_delivery(delivery("d-2"), Duration::minutes(5)).await.unwrap(), DeliveryClaim::Process);
    s.finish_delivery("d-2", DeliveryStatus::Failed, Some("database unavailable")).await.unwrap();
    assert_eq!(s.get_delivery("d-2").await.unwrap().error.as_deref(), Some("database unavailable"));
    assert_eq!(s.begin_delivery(delivery("d-2"), Duration::minutes(5)).await.unwrap(), DeliveryClaim::Process);
    let stored = s.get_delivery("d-2").await.unwrap();
    assert_eq!((stored.status, stored.attempts, stored.error), (DeliveryStatus::Processing, 2, None));
    s.finish_delivery("d-2", DeliveryStatus::Ignored, None).await.unwrap();
    let again = s.begin_delivery(delivery("d-2"), Duration::minutes(5)).await.unwrap();
    assert_eq!(again, DeliveryClaim::Duplicate(DeliveryStatus::Ignored));
}

pub(crate) async fn a_delivery_abandoned_mid_processing_is_taken_again_after_a_while(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.begin_delivery(delivery("d-3"), Duration::minutes(5)).await.unwrap(), DeliveryClaim::Process);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let retaken = s.begin_delivery(delivery("d-3"), Duration::milliseconds(10)).await.unwrap();
    assert_eq!(retaken, DeliveryClaim::Process);
    assert_eq!(s.get_delivery("d-3").await.unwrap().attempts, 2);
}

pub(crate) async fn a_body_replayed_under_another_delivery_id_is_a_duplicate(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.begin_delivery(delivery("d-4"), Duration::minutes(5)).await.unwrap(), DeliveryClaim::Process);
    s.finish_delivery("d-4", DeliveryStatus::Processed, None).await.unwrap();
    // The same signed body, a new id: a replay, not a new delivery; nothing is recorded under it.
    let replay = NewDelivery { delivery_id: "d-5".into(), ..delivery("d-4") };
    let claim = s.begin_delivery(replay.clone(), Duration::minutes(5)).await.unwrap();
    assert_eq!(claim, DeliveryClaim::Duplicate(DeliveryStatus::Processed));
    assert!(s.get_delivery("d-5").await.is_err());
    assert_eq!(
        s.begin_delivery(replay, Duration::minutes(5)).await.unwrap(),
        DeliveryClaim::Duplicate(DeliveryStatus::Processed)
    );
    // Deliveries recorded without a hash never collide.
    for id in ["d-6", "d-7"] {
        let unhashed = NewDelivery { delivery_id: id.into(), body_sha256: None, ..delivery(id) };
        assert_eq!(s.begin_delivery(unhashed, Duration::minutes(5)).await.unwrap(), DeliveryClaim::Process);
    }
}
