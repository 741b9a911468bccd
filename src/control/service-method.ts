// The guard of the control methods that work over a service the server may not run (the backup
// manager, the scheduler): one rule for every such method table (backup-methods.ts,
// schedule-methods.ts). Without the service, the method throws the service's refusal.
import type { Params, ParamsSchema } from './validate.ts';

/** A control method over a service that `ctx` of type C may lack. */
export interface ServiceMethod<S extends ParamsSchema, C> {
  params: S;
  run(p: Params<S>, ctx: C): unknown;
}

/**
 * Makes the method maker of one service: `service` finds it in the context, `refusal` is what a
 * caller is told when the server runs without it.
 */
export function serviceMethod<C, T>(service: (ctx: C) => T | undefined, refusal: () => Error) {
  return <S extends ParamsSchema>(params: S, run: (p: Params<S>, service: T) => unknown): ServiceMethod<S, C> => ({
    params,
    run: (p, ctx) => {
      const s = service(ctx);
      if (s === undefined) throw refusal();
      return run(p, s);
    },
  });
}
