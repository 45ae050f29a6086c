import { isFinalState } from '../../protocol/deployment-state.ts';
import type { BusEvents, EventBus } from '../events/event-bus.ts';
import type { ServerMetrics } from './server-metrics.ts';

/**
 * The bus, counting each deployment that reaches a final state as it is announced. Every path
 * that ends a deployment (an agent's result, a cancellation by a newer rollout, by a staged
 * rollout's decision) announces it once, on the process that wrote the change; events relayed
 * from other replicas do not come through `publish`, so a replica counts only its own.
 */
export function countingBus(bus: EventBus, metrics: Pick<ServerMetrics, 'deploymentFinished'>): EventBus {
  return {
    publish<K extends keyof BusEvents>(type: K, event: BusEvents[K]): void {
      if (type === 'deployment') {
        const e = event as BusEvents['deployment'];
        if (isFinalState(e.state)) metrics.deploymentFinished(e.state, e.step);
      }
      bus.publish(type, event);
    },
    subscribe: (type, listener) => bus.subscribe(type, listener),
  };
}
