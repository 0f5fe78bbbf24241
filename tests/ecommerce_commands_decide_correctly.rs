//! The e-commerce example's commands, tested without a store: given a history, when a command
//! runs, then these events (or this refusal).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/ecommerce/shop.rs"]
#[allow(dead_code)]
mod shop;

use crossfold::core::StreamId;
use crossfold_testkit::CommandTest;
use shop::{
    CancelOrder, CancelReason, Line, OrderId, PayOrder, PlaceOrder, RefundPayment, ShopEvent, Sku,
};

fn sku(s: &str) -> Sku {
    Sku::new(s).unwrap()
}

fn order(s: &str) -> OrderId {
    OrderId::new(s).unwrap()
}

fn listed(name: &str, price_cents: u64, stock: u32) -> (StreamId, ShopEvent) {
    (
        sku(name).stream().clone(),
        ShopEvent::ProductAdded {
            sku: sku(name),
            name: name.into(),
            price_cents,
            stock,
        },
    )
}

/// Two products, and order o-1 for 2 mugs and 1 tea, placed and reserved.
fn placed() -> Vec<(StreamId, ShopEvent)> {
    let o = order("o-1");
    vec![
        listed("mug", 8_00, 5),
        listed("tea", 4_50, 3),
        (
            o.stream().clone(),
            ShopEvent::OrderPlaced {
                order: o.clone(),
                lines: vec![
                    Line {
                        sku: sku("mug"),
                        quantity: 2,
                    },
                    Line {
                        sku: sku("tea"),
                        quantity: 1,
                    },
                ],
                total_cents: 20_50,
            },
        ),
        (
            sku("mug").stream().clone(),
            ShopEvent::StockReserved {
                sku: sku("mug"),
                order: o.clone(),
                quantity: 2,
            },
        ),
        (
            sku("tea").stream().clone(),
            ShopEvent::StockReserved {
                sku: sku("tea"),
                order: o,
                quantity: 1,
            },
        ),
    ]
}

#[test]
fn placing_an_order_reserves_every_product_it_names_in_one_append() {
    let o = order("o-1");
    CommandTest::given([listed("mug", 8_00, 5), listed("tea", 4_50, 3)])
        .when(
            PlaceOrder::new(
                o.clone(),
                [(sku("mug"), 1), (sku("tea"), 1), (sku("mug"), 1)],
            )
            .unwrap(),
        )
        .then_reads([
            o.stream().clone(),
            sku("mug").stream().clone(),
            sku("tea").stream().clone(),
        ])
        .then_expect(placed().into_iter().skip(2));
}

#[test]
fn an_order_for_more_than_is_available_reserves_nothing() {
    CommandTest::given(placed())
        .when(PlaceOrder::new(order("o-2"), [(sku("tea"), 1), (sku("mug"), 4)]).unwrap())
        .then_rejected("out_of_stock");
    CommandTest::given(placed())
        .when(PlaceOrder::new(order("o-2"), [(sku("cake"), 1)]).unwrap())
        .then_rejected("unknown_product");
    CommandTest::given(placed())
        .when(PlaceOrder::new(order("o-1"), [(sku("tea"), 1)]).unwrap())
        .then_rejected("order_exists");
}

#[test]
fn orders_are_validated_before_they_are_commands() {
    assert!(PlaceOrder::new(order("o-1"), []).is_err());
    assert!(PlaceOrder::new(order("o-1"), [(sku("mug"), 0)]).is_err());
    assert!(Sku::new("Mug").is_err());
    assert!(OrderId::new("").is_err());
}

#[test]
fn paying_turns_the_reservations_into_sales() {
    let o = order("o-1");
    CommandTest::given(placed())
        .when(PayOrder {
            order: o.clone(),
            amount_cents: 20_50,
        })
        .then_reads([
            o.stream().clone(),
            sku("mug").stream().clone(),
            sku("tea").stream().clone(),
        ])
        .then_expect([
            (
                o.stream().clone(),
                ShopEvent::OrderPaid {
                    order: o.clone(),
                    amount_cents: 20_50,
                },
            ),
            (
                sku("mug").stream().clone(),
                ShopEvent::StockSold {
                    sku: sku("mug"),
                    order: o.clone(),
                    quantity: 2,
                },
            ),
            (
                sku("tea").stream().clone(),
                ShopEvent::StockSold {
                    sku: sku("tea"),
                    order: o,
                    quantity: 1,
                },
            ),
        ]);
    CommandTest::given(placed())
        .when(PayOrder {
            order: order("o-1"),
            amount_cents: 20_00,
        })
        .then_rejected("wrong_amount");
}

#[test]
fn cancelling_releases_the_stock_once() {
    let o = order("o-1");
    let cancelled = CommandTest::given(placed())
        .when(CancelOrder {
            order: o.clone(),
            reason: CancelReason::PaymentTimeout,
        })
        .then_expect([
            (
                o.stream().clone(),
                ShopEvent::OrderCancelled {
                    order: o.clone(),
                    reason: CancelReason::PaymentTimeout,
                },
            ),
            (
                sku("mug").stream().clone(),
                ShopEvent::StockReleased {
                    sku: sku("mug"),
                    order: o.clone(),
                    quantity: 2,
                },
            ),
            (
                sku("tea").stream().clone(),
                ShopEvent::StockReleased {
                    sku: sku("tea"),
                    order: o.clone(),
                    quantity: 1,
                },
            ),
        ]);
    let mut history = placed();
    history.extend(cancelled.into_result().unwrap());
    CommandTest::given(history.clone())
        .when(CancelOrder {
            order: o.clone(),
            reason: CancelReason::Customer,
        })
        .then_expect_nothing();
    CommandTest::given(history)
        .when(PayOrder {
            order: o,
            amount_cents: 20_50,
        })
        .then_rejected("order_cancelled");
}

#[test]
fn a_paid_order_is_not_cancelled_and_its_deadline_does_nothing() {
    let o = order("o-1");
    let mut history = placed();
    history.push((
        o.stream().clone(),
        ShopEvent::OrderPaid {
            order: o.clone(),
            amount_cents: 20_50,
        },
    ));
    CommandTest::given(history.clone())
        .when(CancelOrder {
            order: o.clone(),
            reason: CancelReason::PaymentTimeout,
        })
        .then_expect_nothing();
    CommandTest::given(history.clone())
        .when(CancelOrder {
            order: o.clone(),
            reason: CancelReason::Customer,
        })
        .then_rejected("already_paid");
    CommandTest::given(history)
        .when(PayOrder {
            order: o,
            amount_cents: 20_50,
        })
        .then_rejected("already_paid");
}

#[test]
fn only_a_payment_the_order_did_not_take_is_refunded() {
    let o = order("o-1");
    let payment = o.payment_stream().unwrap();
    let mut history = placed();
    history.push((
        payment.clone(),
        ShopEvent::PaymentReceived {
            order: o.clone(),
            amount_cents: 20_50,
        },
    ));
    let refund = || RefundPayment {
        order: o.clone(),
        amount_cents: 20_50,
        reason: "order expired".into(),
    };
    // Unpaid order: the money is unused and goes back.
    CommandTest::given(history.clone())
        .when(refund())
        .then_expect([(
            payment.clone(),
            ShopEvent::PaymentRefunded {
                order: o.clone(),
                amount_cents: 20_50,
                reason: "order expired".into(),
            },
        )]);
    // Paid with that money: nothing to refund.
    history.push((
        o.stream().clone(),
        ShopEvent::OrderPaid {
            order: o.clone(),
            amount_cents: 20_50,
        },
    ));
    CommandTest::given(history)
        .when(refund())
        .then_rejected("nothing_to_refund");
}
