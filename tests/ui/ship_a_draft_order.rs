// The banking example's orders carry their lifecycle in their type: a draft has no `ship`.
#[allow(dead_code)]
#[path = "../../examples/banking/order.rs"]
mod order;

fn main() {
    let draft = order::Order::draft("order-1").add_line("sku-1", 1);
    let _shipped = draft.ship("DHL");
}
