// placeholder until the page lands
export default function P() {
  return <div class="empty">audit</div>;
}
