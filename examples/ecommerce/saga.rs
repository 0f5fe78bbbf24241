//! The payment saga: when an order is placed, a deadline to cancel it if it is not paid within
//! 15 minutes; when the payment provider reports a payment, pay the order with it (which
//! cancels the deadline) or, if the order can no longer take it, refund it. The deadline
//! handler cancels an order that is still unpaid, releasing its stock.

use std::time::Duration;

use crossfold::core::deadline::DeadlineStore;
use crossfold::core::{Codec, EventStore, Fold, LogFilter, Recorded, StreamId};
use crossfold::executor::Executed;
use crossfold::executor::{DeadlineHandler, Firing};
use crossfold::projections::{HandlerError, Process, ProcessManager, command_failure};

use crate::shop::{CancelOrder, CancelReason, OrderId, PayOrder, RefundPayment, Shop, ShopEvent};

/// How long an order may wait for its payment.
pub(crate) const PAYMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The deadline kind.
pub(crate) const PAYMENT_DEADLINE: &str = "payment-timeout";

/// The payment saga.
#[derive(Clone, Debug, Default)]
pub(crate) struct PaymentSaga;

impl ProcessManager for PaymentSaga {
    type Event = ShopEvent;
    type State = Shop;

    fn name(&self) -> &str {
        "payment-saga"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::categories(["order", "payment"])
    }

    /// The order (and its payments): what was placed, and whether it is paid or cancelled.
    fn state_streams(&self, event: &Recorded<ShopEvent>) -> Vec<StreamId> {
        let order = match &event.event {
            ShopEvent::OrderPlaced { order, .. }
            | ShopEvent::OrderCancelled { order, .. }
            | ShopEvent::PaymentReceived { order, .. } => order,
            _ => return Vec::new(),
        };
        let mut streams = vec![order.stream().clone()];
        streams.extend(order.payment_stream().ok());
        streams
    }

    /// The commands' own fold: the saga sees the order as they do.
    fn apply(state: &mut Shop, event: &Recorded<ShopEvent>) {
        state.apply(event);
    }

    async fn react<S: EventStore, C: Codec, D: DeadlineStore>(
        &self,
        state: &Shop,
        event: &Recorded<ShopEvent>,
        process: &mut Process<'_, S, C, D>,
    ) -> Result<(), HandlerError> {
        match &event.event {
            ShopEvent::OrderPlaced { order, .. } => {
                process
                    .schedule(
                        PAYMENT_DEADLINE,
                        PAYMENT_TIMEOUT,
                        serde_json::json!({ "order": order }),
                    )
                    .await?;
            }
            ShopEvent::PaymentReceived {
                order,
                amount_cents,
            } => {
                let paid = process
                    .execute(PayOrder {
                        order: order.clone(),
                        amount_cents: *amount_cents,
                    })
                    .await;
                match paid {
                    Ok(_) => cancel_deadline(state, order, process).await?,
                    Err(error) if error.rule().is_some() => {
                        let refund = process
                            .execute(RefundPayment {
                                order: order.clone(),
                                amount_cents: *amount_cents,
                                reason: error.rule().unwrap_or("refused").to_owned(),
                            })
                            .await;
                        match refund {
                            // Nothing left to give back (it was refunded already): done.
                            Err(e) if e.rule().is_some() => {}
                            other => drop(other.map_err(command_failure)?),
                        }
                    }
                    Err(error) => return Err(command_failure(error)),
                }
            }
            ShopEvent::OrderCancelled {
                order,
                reason: CancelReason::Customer,
            } => cancel_deadline(state, order, process).await?,
            _ => {}
        }
        Ok(())
    }
}

async fn cancel_deadline<S: EventStore, C: Codec, D: DeadlineStore>(
    state: &Shop,
    order: &OrderId,
    process: &mut Process<'_, S, C, D>,
) -> Result<(), HandlerError> {
    if let Some(placed) = state.orders.get(order).map(|o| o.placed_by) {
        let id = process.deadline_id(PAYMENT_DEADLINE, placed)?;
        process.cancel(&id).await?;
    }
    Ok(())
}

/// Fires payment deadlines: cancels the order if it is still unpaid (the command does nothing
/// for a paid one), releasing its stock.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExpireUnpaidOrders;

impl<S: EventStore, C: Codec> DeadlineHandler<S, C> for ExpireUnpaidOrders {
    async fn fire(&self, firing: Firing<'_, S, C>) -> Result<Executed, crossfold::executor::Error> {
        let order: OrderId = serde_json::from_value(firing.deadline().payload["order"].clone())
            .map_err(|e| {
                crossfold::executor::Error::Command(crossfold::core::CommandError::InvalidState(
                    format!("payment deadline without an order: {e}"),
                ))
            })?;
        firing
            .execute(CancelOrder {
                order,
                reason: CancelReason::PaymentTimeout,
            })
            .await
    }
}
